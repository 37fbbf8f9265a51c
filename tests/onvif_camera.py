#!/usr/bin/python3
"""A test ONVIF PTZ camera for ponte's tests, checked against the standard.

usage: onvif_camera.py [--port N] [--user U --password P] [--presets 1:Ingresso,2:Rotatoria]
                       [--auth-status 400|401] [--hostile] [--max-subscription S]
                       [--schemas DIR] [--check] [--self-test]

Serves SOAP 1.2 over HTTP: /onvif/ptz_service (ContinuousMove, Stop,
GotoPreset, GetPresets, GetStatus), /onvif/media_service (GetProfiles: one
profile `Profile_1` with a PTZConfiguration) and /onvif/events_service
(CreatePullPointSubscription, GetEventProperties; the pull points it hands
out at /onvif/events_service/pullpoint/<n> serve PullMessages, Renew and
Unsubscribe). Every request's operation element (the SOAP Body's child) and
every response's are validated with lxml against the XML schema embedded in
the official ONVIF ptz.wsdl / media.wsdl / events.wsdl and what they import
(onvif.xsd, WS-BaseNotification b-2.xsd, t-1.xsd, ws-addr.xsd); the
SOAPAction in the Content-Type, when given, must be one the wsdl bindings
name.

Events: a subscription lives until its TerminationTime (what
InitialTerminationTime or Renew asked, 60 s by default, at most
--max-subscription seconds); then it is dropped and PullMessages on it, like
on any unknown pull point, answers the fault env:Sender/ter:InvalidArgVal/
ter:ResourceUnknown. PullMessages waits up to its Timeout (at most PT60S)
for a first message and returns up to MessageLimit queued ones (each pull
point queues at most 10000, oldest dropped). Messages take the standard
ONVIF form, tt:Message with UtcTime and PropertyOperation="Changed":
  motion      tns1:RuleEngine/CellMotionDetector/Motion, Source
              VideoSourceConfigurationToken=VideoSourceConfig_<lens>,
              VideoAnalyticsConfigurationToken, Rule; Data IsMotion
  tampering   tns1:VideoSource/GlobalSceneChange/ImagingService, Source
              Source=VideoSource_<lens>; Data State
  video_loss  tns1:VideoSource/SignalLoss, Source Source=VideoSource_<lens>;
              Data State
Tests raise them with the control route
  POST /test/events?kind=motion|tampering|video_loss&count=N&rate=R&state=S&source=L
(count 1 by default; rate R a second on a thread of its own, all at once
when absent or 0; state true, false or alternate (true, false, true, ...;
the default); source L the lens, 1 by default). Each event goes to every
live pull point; the answer is {"live": <pull points>, "count": N}.
`GET /test/events` answers {"live": n, "subscriptions": [{"number",
"queued", "delivered", "pulls", "termination_in"}]}. Requests must carry a
WS-Security UsernameToken with PasswordDigest = Base64(SHA1(nonce + created +
password)), a Created within 5 minutes and a nonce not seen before; otherwise
the answer is a SOAP fault env:Sender/ter:NotAuthorized (HTTP --auth-status,
400 by default, as many cameras do). Schema-invalid requests get
env:Sender/ter:InvalidArgs. The camera keeps a simulated position that
integrates the ContinuousMove velocities (1 unit/s at full speed) until Stop
or the move's Timeout.

With --hostile the camera attacks its client, still within the 1 MiB an
answer may have: GetPresets lists thousands of presets whose names are
hundreds of `"` (a JSON escape doubles each one), and GotoPreset fails with
a fault whose reason is half a megabyte of them, led by the camera's internal
URL (`http://10.66.1.23/...`) and a C1 control. Those answers skip the
response schema check (they break it on purpose); requests are still checked.

Every operation is recorded: `GET /recorded` returns a JSON array of
{"op", "profile", "pan", "tilt", "zoom", "preset", "timeout", "t", "valid",
"errors", "authorized"}. Prints `LISTENING <port>` once ready.

The schemas come from the onvif-zeep 0.2.12 sdist on PyPI (its wsdl/
directory); ./scripts/test puts them in /var/cache/ponte-onvif/wsdl, and
$PONTE_ONVIF_WSDL or --schemas overrides the directory. Nothing is fetched
over the network at run time: every import resolves to a file in that
directory. `--check` exits 0 when lxml and the schemas load (2 otherwise,
saying what is missing); `--self-test` validates sample requests and
responses, checks that broken ones are rejected and drives a short session
over HTTP, so a broken camera cannot pass.
Run with Debian's /usr/bin/python3 (python3-lxml).
"""
import argparse
import base64
import collections
import copy
import datetime
import hashlib
import http.client
import http.server
import json
import os
import urllib.parse
import re
import secrets
import sys
import tempfile
import threading
import time

DEFAULT_SCHEMAS = "/var/cache/ponte-onvif/wsdl"
SCHEMA_FILES = ("ptz.wsdl", "media.wsdl", "events.wsdl", "onvif.xsd", "b-2.xsd", "bf-2.xsd", "t-1.xsd",
                "ws-addr.xsd", "xml.xsd", "xmlmime", "envelope", "include")

XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
ENV = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TER = "http://www.onvif.org/ver10/error"
TT = "http://www.onvif.org/ver10/schema"
TPTZ = "http://www.onvif.org/ver20/ptz/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = ("http://docs.oasis-open.org/wss/2004/01/"
                   "oasis-200401-wss-username-token-profile-1.0#PasswordDigest")
XML_NS = "http://www.w3.org/XML/1998/namespace"
TEV = "http://www.onvif.org/ver10/events/wsdl"
WSNT = "http://docs.oasis-open.org/wsn/b-2"
WSA = "http://www.w3.org/2005/08/addressing"
WSTOP = "http://docs.oasis-open.org/wsn/t-1"
TNS1 = "http://www.onvif.org/ver10/topics"
WSDLS = ("ptz.wsdl", "media.wsdl", "events.wsdl")
# path -> the namespaces of its operations and the operations it serves.
SERVICES = {"/onvif/ptz_service": ((TPTZ,), None), "/onvif/media_service": ((TRT,), None),
            "/onvif/events_service": ((TEV,), ("CreatePullPointSubscription", "GetEventProperties"))}
PULLPOINT_PREFIX = "/onvif/events_service/pullpoint/"
PULLPOINT_OPS = ("PullMessages", "Renew", "Unsubscribe")
PTZ_OPS = ("ContinuousMove", "Stop", "GotoPreset", "GetPresets", "GetStatus")
PROFILE = "Profile_1"
PANTILT_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
ZOOM_SPACE = "http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"
MAX_BODY = 1 << 20
CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
EVENT_NSMAP = {"tev": TEV, "wsnt": WSNT, "wsa": WSA, "wstop": WSTOP, "tns1": TNS1, "tt": TT}
PULL_ACTION = TEV + "/PullPointSubscription/PullMessagesRequest"
RENEW_ACTION = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/RenewRequest"
# kind -> (topic, Source SimpleItems of a video source token, Data item).
EVENT_KINDS = {
    "motion": ("RuleEngine/CellMotionDetector/Motion",
               lambda lens: [("VideoSourceConfigurationToken", "VideoSourceConfig_%d" % lens),
                               ("VideoAnalyticsConfigurationToken", "VideoAnalyticsConfig_1"),
                               ("Rule", "MyMotionDetectorRule")], "IsMotion"),
    "tampering": ("VideoSource/GlobalSceneChange/ImagingService",
                  lambda lens: [("Source", "VideoSource_%d" % lens)], "State"),
    "video_loss": ("VideoSource/SignalLoss", lambda lens: [("Source", "VideoSource_%d" % lens)], "State"),
}
DEFAULT_SUBSCRIPTION = 60.0
MAX_PULL_TIMEOUT = 60
EVENT_QUEUE = 10_000
TEST_EVENTS_PATH = "/test/events"
CREATED_SKEW_S = 300
# --hostile: what an answer may hold and stay under the client's 1 MiB.
HOSTILE_ANSWER = 1_000_000
HOSTILE_NAME = '"' * 200
HOSTILE_URL = "http://10.66.1.23/onvif/ptz_service"
HOSTILE_FAULT = "%s refused the request\n\x9b2J" % HOSTILE_URL + '"' * 540_000

try:
    from lxml import etree
except ImportError:  # reported by --check and at start
    etree = None


def q(ns, name):
    return "{%s}%s" % (ns, name)


def safe_parser():
    # No DTDs, entities or network: requests are untrusted input.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


class Schemas:
    """The ONVIF schema (types embedded in ptz.wsdl, media.wsdl and
    events.wsdl, importing onvif.xsd and the WS-BaseNotification b-2.xsd),
    compiled once, and the SOAPActions of the wsdl bindings: (element
    namespace, operation) -> the set of actions its bindings name (Renew and
    Unsubscribe have two, plain and pausable subscription manager)."""

    def __init__(self, directory):
        missing = [f for f in SCHEMA_FILES if not os.path.isfile(os.path.join(directory, f))]
        if missing:
            raise FileNotFoundError("ONVIF schemas missing in %s: %s" % (directory, ", ".join(missing)))
        self.directory = directory
        self.tmp = tempfile.TemporaryDirectory(prefix="ponte-onvif-schema-")
        self.actions = {}
        wrapper = etree.Element(q(XS, "schema"), nsmap={"xs": XS})
        for wsdl in WSDLS:
            doc = etree.parse(os.path.join(directory, wsdl), safe_parser())
            embedded = doc.getroot().find("%s/%s" % (q(WSDL, "types"), q(XS, "schema")))
            if embedded is None:
                raise ValueError("%s has no wsdl:types/xs:schema" % wsdl)
            # The embedded schema uses prefixes declared on wsdl:definitions
            # (e.g. trt:): carry them over to the standalone copy.
            nsmap = dict(doc.getroot().nsmap)
            nsmap.update(embedded.nsmap)
            schema = etree.Element(embedded.tag, attrib=dict(embedded.attrib), nsmap=nsmap)
            for child in embedded:
                schema.append(copy.deepcopy(child))
            for imp in schema.findall(q(XS, "import")):
                location = imp.get("schemaLocation", "")
                if location.startswith(("http:", "https:")):
                    raise ValueError("%s imports %s over the network" % (wsdl, location))
                imp.set("schemaLocation", "file://" + os.path.join(directory, os.path.basename(location)))
            path = os.path.join(self.tmp.name, wsdl + ".xsd")
            etree.ElementTree(schema).write(path)
            etree.SubElement(wrapper, q(XS, "import"), namespace=schema.get("targetNamespace"),
                             schemaLocation="file://" + path)
            ns = schema.get("targetNamespace")
            for binding in doc.getroot().iter(q(WSDL, "binding")):
                # Bindings of the wsdl's own port types carry its elements;
                # the WS-BaseNotification ones (wsntw:) carry b-2's.
                prefix, _, _ = (binding.get("type") or "").rpartition(":")
                own = binding.nsmap.get(prefix or None) == doc.getroot().get("targetNamespace")
                for op in binding.iter(q(WSDL, "operation")):
                    soap_op = op.find(q(WSDL_SOAP12, "operation"))
                    if soap_op is not None and soap_op.get("soapAction"):
                        key = (ns if own else WSNT, op.get("name"))
                        self.actions.setdefault(key, set()).add(soap_op.get("soapAction"))
        self.schema = etree.XMLSchema(wrapper)

    def errors(self, element):
        """Schema errors of an operation element (empty when valid)."""
        root = copy.deepcopy(element)
        if self.schema.validate(etree.ElementTree(root)):
            return []
        return ["%s (line %d)" % (e.message, e.line) for e in self.schema.error_log]


def parse_duration(text):
    """Seconds of an xs:duration (no years/months), or None."""
    m = re.fullmatch(r"(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text or "")
    if not m or text.endswith(("P", "T")):
        return None
    sign, d, h, mi, s = m.groups()
    total = int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)
    return -total if sign else total


def password_digest(nonce, created, password):
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


def parse_created(text):
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


class Fault(Exception):
    """A SOAP 1.2 fault: code (env:Sender/Receiver/VersionMismatch), ONVIF subcodes, reason."""

    def __init__(self, status, code, subcodes, reason):
        super().__init__(reason)
        self.status, self.code, self.subcodes, self.reason = status, code, subcodes, reason


def route(path):
    """(operation namespaces, operations served or None for all) of a
    SOAP path, or None when nothing is served there."""
    if path in SERVICES:
        return SERVICES[path]
    if path and path.startswith(PULLPOINT_PREFIX) and path[len(PULLPOINT_PREFIX):].isdigit():
        return (TEV, WSNT), PULLPOINT_OPS
    return None


def xs_datetime(t):
    """Unix seconds as xs:dateTime in UTC, milliseconds."""
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (d.microsecond // 1000)


def termination_of(text, now):
    """A wsnt:AbsoluteOrRelativeTimeType (xs:dateTime or xs:duration) as Unix
    seconds, or None."""
    text = (text or "").strip()
    if text.startswith(("P", "-P")):
        seconds = parse_duration(text)
        return None if seconds is None else now + seconds
    try:
        return parse_created(text)
    except ValueError:
        return None


class Subscription:
    """One pull point: queued NotificationMessages and when it ends."""

    def __init__(self, number, termination):
        self.number = number
        self.termination = termination
        self.queue = collections.deque(maxlen=EVENT_QUEUE)
        self.queued = self.delivered = self.pulls = 0
        self.pending = 0  # PullMessages waiting: the subscription is not dropped meanwhile


class EventSource:
    """The Events service: pull-point subscriptions and the events the test
    control route makes the camera raise."""

    def __init__(self, max_subscription=3600.0):
        self.cv = threading.Condition()
        self.subscriptions = {}
        self.next_number = 1
        self.max_subscription = max_subscription
        self.base = "http://127.0.0.1"

    def _expire(self, now):
        for number, sub in list(self.subscriptions.items()):
            if sub.termination < now and sub.pending == 0:
                del self.subscriptions[number]

    def _termination(self, requested, now):
        """The granted termination time: what was asked (60 s when nothing
        was), at most --max-subscription from now."""
        if requested is None:
            requested = now + DEFAULT_SUBSCRIPTION
        return min(requested, now + self.max_subscription)

    def _subscription(self, path, now):
        number = path[len(PULLPOINT_PREFIX):] if path.startswith(PULLPOINT_PREFIX) else ""
        sub = self.subscriptions.get(int(number)) if number.isdigit() else None
        if sub is None:
            raise Fault(400, "Sender", ["ter:InvalidArgVal", "ter:ResourceUnknown"],
                        "no subscription at %s (expired or unsubscribed): create a new one" % path)
        return sub

    def operate(self, op, element, path, record):
        now = time.time()
        with self.cv:
            self._expire(now)
            if op == "GetEventProperties":
                return event_properties()
            if op == "CreatePullPointSubscription":
                requested_text = element.findtext(q(TEV, "InitialTerminationTime"))
                requested = termination_of(requested_text, now) if requested_text else None
                if requested_text and (requested is None or requested <= now):
                    raise Fault(400, "Sender", ["ter:InvalidArgVal", "wsnt:UnacceptableInitialTerminationTimeFault"],
                                "InitialTerminationTime %r is not in the future" % requested_text)
                sub = Subscription(self.next_number, self._termination(requested, now))
                self.next_number += 1
                self.subscriptions[sub.number] = sub
                record["subscription"] = sub.number
                response = etree.Element(q(TEV, "CreatePullPointSubscriptionResponse"), nsmap=EVENT_NSMAP)
                reference = etree.SubElement(response, q(TEV, "SubscriptionReference"))
                etree.SubElement(reference, q(WSA, "Address")).text = "%s%s%d" % (self.base, PULLPOINT_PREFIX, sub.number)
                etree.SubElement(response, q(WSNT, "CurrentTime")).text = xs_datetime(now)
                etree.SubElement(response, q(WSNT, "TerminationTime")).text = xs_datetime(sub.termination)
                return response
            sub = self._subscription(path, now)
            record["subscription"] = sub.number
            if op == "Renew":
                text = element.findtext(q(WSNT, "TerminationTime"))
                requested = termination_of(text, now)
                if requested is None or requested <= now:
                    raise Fault(400, "Sender", ["ter:InvalidArgVal", "wsnt:UnacceptableTerminationTimeFault"],
                                "TerminationTime %r is not in the future" % text)
                sub.termination = self._termination(requested, now)
                response = etree.Element(q(WSNT, "RenewResponse"), nsmap=EVENT_NSMAP)
                etree.SubElement(response, q(WSNT, "TerminationTime")).text = xs_datetime(sub.termination)
                etree.SubElement(response, q(WSNT, "CurrentTime")).text = xs_datetime(now)
                return response
            if op == "Unsubscribe":
                del self.subscriptions[sub.number]
                self.cv.notify_all()
                return etree.Element(q(WSNT, "UnsubscribeResponse"), nsmap=EVENT_NSMAP)
            # PullMessages: wait up to Timeout for a first message.
            timeout = parse_duration(element.findtext(q(TEV, "Timeout")))
            limit = int(element.findtext(q(TEV, "MessageLimit")))
            record["timeout"] = element.findtext(q(TEV, "Timeout"))
            if timeout is None or timeout < 0 or timeout > MAX_PULL_TIMEOUT or limit < 1:
                raise Fault(400, "Sender", ["ter:InvalidArgVal"],
                            "Timeout %r or MessageLimit %d out of range (at most PT%dS, at least 1 message)"
                            % (record["timeout"], limit, MAX_PULL_TIMEOUT))
            sub.pulls += 1
            sub.pending += 1
            try:
                deadline = time.monotonic() + timeout
                while not sub.queue and sub.number in self.subscriptions:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cv.wait(left)
            finally:
                sub.pending -= 1
            now = time.time()
            response = etree.Element(q(TEV, "PullMessagesResponse"), nsmap=EVENT_NSMAP)
            etree.SubElement(response, q(TEV, "CurrentTime")).text = xs_datetime(now)
            etree.SubElement(response, q(TEV, "TerminationTime")).text = xs_datetime(sub.termination)
            while sub.queue and limit > 0:
                response.append(sub.queue.popleft())
                sub.delivered += 1
                limit -= 1
            record["messages"] = len(response) - 2
            return response

    def raise_event(self, kind, active, source):
        """Queues one event to every live pull point; returns how many."""
        now = time.time()
        with self.cv:
            self._expire(now)
            for sub in self.subscriptions.values():
                sub.queue.append(notification(kind, active, source, now))
                sub.queued += 1
            self.cv.notify_all()
            return len(self.subscriptions)

    def trigger(self, kind, count, rate, state, source):
        """Raises `count` events, `rate` a second (all at once without one),
        on a thread of their own; returns the live pull points now."""
        def active(i):
            return state == "true" or (state == "alternate" and i % 2 == 0)

        if not rate:
            for i in range(count):
                live = self.raise_event(kind, active(i), source)
            return live if count else self.status()["live"]

        def run():
            start = time.monotonic()
            for i in range(count):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.raise_event(kind, active(i), source)

        threading.Thread(target=run, daemon=True).start()
        return self.status()["live"]

    def status(self):
        now = time.time()
        with self.cv:
            self._expire(now)
            subs = [{"number": s.number, "queued": s.queued, "delivered": s.delivered, "pulls": s.pulls,
                     "termination_in": round(s.termination - now, 3)} for s in self.subscriptions.values()]
            return {"live": len(subs), "subscriptions": subs}


def notification(kind, active, source, now):
    """A wsnt:NotificationMessage in the ONVIF form of `kind`."""
    topic, source_items, data_name = EVENT_KINDS[kind]
    message = etree.Element(q(WSNT, "NotificationMessage"), nsmap=EVENT_NSMAP)
    etree.SubElement(message, q(WSNT, "Topic"), Dialect=CONCRETE_SET).text = "tns1:" + topic
    holder = etree.SubElement(message, q(WSNT, "Message"))
    body = etree.SubElement(holder, q(TT, "Message"), UtcTime=xs_datetime(now), PropertyOperation="Changed")
    items = etree.SubElement(body, q(TT, "Source"))
    for name, value in source_items(source):
        etree.SubElement(items, q(TT, "SimpleItem"), Name=name, Value=value)
    data = etree.SubElement(body, q(TT, "Data"))
    etree.SubElement(data, q(TT, "SimpleItem"), Name=data_name, Value="true" if active else "false")
    return message


def event_properties():
    """GetEventPropertiesResponse: the three topics this camera raises."""
    response = etree.Element(q(TEV, "GetEventPropertiesResponse"), nsmap=EVENT_NSMAP)
    etree.SubElement(response, q(TEV, "TopicNamespaceLocation")).text = \
        "http://www.onvif.org/onvif/ver10/topics/topicns.xml"
    etree.SubElement(response, q(WSNT, "FixedTopicSet")).text = "true"
    topics = etree.SubElement(response, q(WSTOP, "TopicSet"))
    for topic, _source, _data in EVENT_KINDS.values():
        node = topics
        for part in topic.split("/"):
            found = node.find(q(TNS1, part))
            node = etree.SubElement(node, q(TNS1, part)) if found is None else found
        node.set(q(WSTOP, "topic"), "true")
    etree.SubElement(response, q(WSNT, "TopicExpressionDialect")).text = CONCRETE_SET
    etree.SubElement(response, q(WSNT, "TopicExpressionDialect")).text = \
        "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete"
    etree.SubElement(response, q(TEV, "MessageContentFilterDialect")).text = \
        "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"
    etree.SubElement(response, q(TEV, "MessageContentSchemaLocation")).text = \
        "http://www.onvif.org/onvif/ver10/schema/onvif.xsd"
    return response


class Camera:
    """The simulated PTZ head, its presets, credentials and the recording."""

    def __init__(self, schemas, user=None, password=None, presets=(), auth_status=400,
                 default_timeout=10.0, hostile=False, max_subscription=3600.0):
        self.schemas = schemas
        self.events = EventSource(max_subscription)
        self.hostile = hostile
        self.user, self.password = user, password
        self.auth_status = auth_status
        self.default_timeout = default_timeout
        self.presets = []
        for i, (token, name) in enumerate(presets):
            position = (round(-0.8 + 0.4 * (i % 5), 3), round(0.5 - 0.25 * (i % 3), 3), round(0.1 * (i % 10), 3))
            self.presets.append((token, name, position))
        self.lock = threading.Lock()
        self.pos = [0.0, 0.0, 0.0]
        self.vel = (0.0, 0.0, 0.0)
        self.since = time.monotonic()
        self.until = None
        self.seen_nonces = set()
        self.recorded = []

    # --- motion -------------------------------------------------------
    def _advance(self, now):
        """Integrates the velocity up to `now` (or the move's end)."""
        end = now if self.until is None else min(now, self.until)
        dt = max(0.0, end - self.since)
        limits = ((-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0))
        for axis in range(3):
            lo, hi = limits[axis]
            self.pos[axis] = min(hi, max(lo, self.pos[axis] + self.vel[axis] * dt))
        self.since = now
        if self.until is not None and now >= self.until:
            self.vel, self.until = (0.0, 0.0, 0.0), None

    def _moving(self):
        return any(v != 0.0 for v in self.vel[:2]), self.vel[2] != 0.0

    # --- auth ---------------------------------------------------------
    def auth_problem(self, envelope):
        """None when the WS-Security UsernameToken is right, else why not."""
        if self.user is None:
            return None
        header = envelope.find(q(ENV, "Header"))
        token = None if header is None else header.find("%s/%s" % (q(WSSE, "Security"), q(WSSE, "UsernameToken")))
        if token is None:
            return "no wsse:Security/wsse:UsernameToken in the SOAP header"
        user = token.findtext(q(WSSE, "Username"))
        pw = token.find(q(WSSE, "Password"))
        nonce_text = token.findtext(q(WSSE, "Nonce"))
        created = token.findtext(q(WSU, "Created"))
        if pw is None or nonce_text is None or created is None:
            return "UsernameToken lacks Password, Nonce or wsu:Created"
        if pw.get("Type") != PASSWORD_DIGEST:
            return "Password Type is %r, not PasswordDigest" % pw.get("Type")
        try:
            nonce = base64.b64decode(nonce_text.strip(), validate=True)
            created_at = parse_created(created)
        except ValueError as e:
            return "bad Nonce or Created: %s" % e
        if abs(time.time() - created_at) > CREATED_SKEW_S:
            return "Created %s is more than %d s from the camera's clock" % (created, CREATED_SKEW_S)
        if user != self.user or (pw.text or "").strip() != password_digest(nonce, created, self.password):
            return "wrong username or password digest"
        if nonce in self.seen_nonces:
            return "nonce replayed"
        self.seen_nonces.add(nonce)
        return None

    # --- operations ---------------------------------------------------
    def operate(self, op, ns, element, record, path=None):
        """Carries out a schema-valid operation; returns the response element."""
        now = time.monotonic()
        if ns in (TEV, WSNT):
            _namespaces, ops = route(path or "/onvif/events_service")
            if op not in ops:
                raise Fault(500, "Receiver", ["ter:ActionNotSupported"],
                            "events operation %s is not served at %s" % (op, path))
            return self.events.operate(op, element, path or "", record)
        E = lambda name, tns=ns, **attrs: etree.Element(q(tns, name), attrib=attrs, nsmap={"tptz": TPTZ, "trt": TRT, "tt": TT})  # noqa: E731
        if ns == TRT:
            if op != "GetProfiles":
                raise Fault(500, "Receiver", ["ter:ActionNotSupported"], "media operation %s is not supported" % op)
            return self.profiles_response()
        if op not in PTZ_OPS:
            raise Fault(500, "Receiver", ["ter:ActionNotSupported"], "PTZ operation %s is not supported" % op)
        profile = element.findtext(q(TPTZ, "ProfileToken"))
        record["profile"] = profile
        if profile != PROFILE:
            raise Fault(400, "Sender", ["ter:InvalidArgVal", "ter:NoProfile"], "no profile %r" % profile)
        with self.lock:
            self._advance(now)
            if op == "ContinuousMove":
                velocity = element.find(q(TPTZ, "Velocity"))
                pantilt = velocity.find(q(TT, "PanTilt"))
                zoom = velocity.find(q(TT, "Zoom"))
                pan = tilt = z = None
                if pantilt is not None:
                    pan, tilt = float(pantilt.get("x")), float(pantilt.get("y"))
                if zoom is not None:
                    z = float(zoom.get("x"))
                record.update(pan=pan, tilt=tilt, zoom=z)
                timeout_text = element.findtext(q(TPTZ, "Timeout"))
                record["timeout"] = timeout_text
                seconds = self.default_timeout if timeout_text is None else parse_duration(timeout_text)
                if seconds is None or seconds <= 0:
                    raise Fault(400, "Sender", ["ter:InvalidArgVal", "ter:TimeoutNotSupported"],
                                "timeout %r not supported" % timeout_text)
                if any(v is not None and abs(v) > 1.0 for v in (pan, tilt, z)):
                    raise Fault(400, "Sender", ["ter:InvalidArgVal", "ter:InvalidVelocity"],
                                "velocity outside the generic space -1..1")
                old = self.vel
                self.vel = (old[0] if pan is None else pan, old[1] if tilt is None else tilt,
                            old[2] if z is None else z)
                self.until = now + seconds
                return E("ContinuousMoveResponse")
            if op == "Stop":
                stop_pt = element.findtext(q(TPTZ, "PanTilt")) not in ("false", "0")
                stop_zoom = element.findtext(q(TPTZ, "Zoom")) not in ("false", "0")
                v = self.vel
                self.vel = (0.0 if stop_pt else v[0], 0.0 if stop_pt else v[1], 0.0 if stop_zoom else v[2])
                return E("StopResponse")
            if op == "GotoPreset" and self.hostile:
                record["preset"] = element.findtext(q(TPTZ, "PresetToken"))
                raise Fault(400, "Sender", ["ter:InvalidArgVal", "ter:NoToken"], HOSTILE_FAULT)
            if op == "GetPresets" and self.hostile:
                return self.hostile_presets(E("GetPresetsResponse"))
            if op == "GotoPreset":
                token = element.findtext(q(TPTZ, "PresetToken"))
                record["preset"] = token
                for preset_token, _name, position in self.presets:
                    if preset_token == token:
                        self.pos = list(position)
                        self.vel, self.until = (0.0, 0.0, 0.0), None
                        return E("GotoPresetResponse")
                raise Fault(400, "Sender", ["ter:InvalidArgVal", "ter:NoToken"],
                            "The requested preset token %r does not exist" % token)
            if op == "GetPresets":
                response = E("GetPresetsResponse")
                for token, name, (pan, tilt, zoom) in self.presets:
                    preset = etree.SubElement(response, q(TPTZ, "Preset"), token=token)
                    etree.SubElement(preset, q(TT, "Name")).text = name
                    position = etree.SubElement(preset, q(TT, "PTZPosition"))
                    etree.SubElement(position, q(TT, "PanTilt"), x=fmt(pan), y=fmt(tilt), space=PANTILT_SPACE)
                    etree.SubElement(position, q(TT, "Zoom"), x=fmt(zoom), space=ZOOM_SPACE)
                return response
            # GetStatus
            response = E("GetStatusResponse")
            status = etree.SubElement(response, q(TPTZ, "PTZStatus"))
            position = etree.SubElement(status, q(TT, "Position"))
            etree.SubElement(position, q(TT, "PanTilt"), x=fmt(self.pos[0]), y=fmt(self.pos[1]), space=PANTILT_SPACE)
            etree.SubElement(position, q(TT, "Zoom"), x=fmt(self.pos[2]), space=ZOOM_SPACE)
            moving_pt, moving_zoom = self._moving()
            move = etree.SubElement(status, q(TT, "MoveStatus"))
            etree.SubElement(move, q(TT, "PanTilt")).text = "MOVING" if moving_pt else "IDLE"
            etree.SubElement(move, q(TT, "Zoom")).text = "MOVING" if moving_zoom else "IDLE"
            etree.SubElement(status, q(TT, "UtcTime")).text = \
                datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            return response

    def hostile_presets(self, response):
        """As many presets with names of `"` as fit in HOSTILE_ANSWER bytes."""
        empty = len(envelope_bytes(copy.deepcopy(response)))
        one = len(envelope_bytes(self._hostile_preset(copy.deepcopy(response), 0))) - empty
        for i in range((HOSTILE_ANSWER - empty) // one):
            self._hostile_preset(response, i)
        return response

    def _hostile_preset(self, response, i):
        preset = etree.SubElement(response, q(TPTZ, "Preset"), token=str(100000 + i))
        etree.SubElement(preset, q(TT, "Name")).text = HOSTILE_NAME
        return response

    def profiles_response(self):
        response = etree.Element(q(TRT, "GetProfilesResponse"), nsmap={"trt": TRT, "tt": TT})
        profile = etree.SubElement(response, q(TRT, "Profiles"), token=PROFILE, fixed="true")
        etree.SubElement(profile, q(TT, "Name")).text = "mainStream"
        ptz = etree.SubElement(profile, q(TT, "PTZConfiguration"), token="PTZConfig_1")
        etree.SubElement(ptz, q(TT, "Name")).text = "PTZ"
        etree.SubElement(ptz, q(TT, "UseCount")).text = "1"
        etree.SubElement(ptz, q(TT, "NodeToken")).text = "PTZNode_1"
        etree.SubElement(ptz, q(TT, "DefaultContinuousPanTiltVelocitySpace")).text = \
            "http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace"
        etree.SubElement(ptz, q(TT, "DefaultContinuousZoomVelocitySpace")).text = \
            "http://www.onvif.org/ver10/tptz/ZoomSpaces/VelocityGenericSpace"
        etree.SubElement(ptz, q(TT, "DefaultPTZTimeout")).text = "PT%gS" % self.default_timeout
        return response

    def handle(self, path, content_type, body):
        """One SOAP request → (HTTP status, response bytes). Records it."""
        record = {"op": None, "profile": None, "pan": None, "tilt": None, "zoom": None, "preset": None,
                  "timeout": None, "t": time.time(), "valid": True, "errors": [], "authorized": True}
        try:
            return 200, self._handle(path, content_type, body, record)
        except Fault as fault:
            return fault.status, envelope_bytes(fault_element(fault))
        except Exception as e:  # noqa: BLE001 - a camera bug must show in the recording, not hang the client
            record["valid"] = False
            record["errors"].append("camera bug: %r" % e)
            return 500, envelope_bytes(fault_element(Fault(500, "Receiver", [], "camera bug: %r" % e)))
        finally:
            if record["op"] is not None or record["errors"]:
                with self.lock:
                    self.recorded.append(record)

    def _handle(self, path, content_type, body, record):
        def invalid(message):
            record["valid"] = False
            record["errors"].append(message)

        service_ns, _ops = route(path)
        media_type, params = parse_content_type(content_type)
        if media_type != "application/soap+xml":
            invalid("Content-Type %r is not SOAP 1.2's application/soap+xml" % content_type)
            raise Fault(415, "Sender", ["ter:InvalidArgs"], "Content-Type must be application/soap+xml")
        try:
            envelope = etree.fromstring(body, safe_parser())
        except etree.XMLSyntaxError as e:
            invalid("not well-formed XML: %s" % e)
            raise Fault(400, "Sender", ["ter:WellFormed"], "XML not well-formed: %s" % e)
        if envelope.tag != q(ENV, "Envelope"):
            invalid("root element %s is not the SOAP 1.2 Envelope" % envelope.tag)
            raise Fault(500, "VersionMismatch", [], "expected a SOAP 1.2 envelope (%s)" % ENV)
        children = [c for c in envelope if isinstance(c.tag, str)]
        names = [c.tag for c in children]
        if names not in ([q(ENV, "Body")], [q(ENV, "Header"), q(ENV, "Body")]):
            invalid("Envelope children are %s, not [Header] Body" % names)
            raise Fault(400, "Sender", ["ter:InvalidArgs"], "Envelope must hold an optional Header then a Body")
        ops = [c for c in children[-1] if isinstance(c.tag, str)]
        if len(ops) != 1:
            invalid("SOAP Body holds %d elements, not one operation" % len(ops))
            raise Fault(400, "Sender", ["ter:InvalidArgs"], "Body must hold exactly one operation")
        element = ops[0]
        ns, op = etree.QName(element).namespace, etree.QName(element).localname
        record["op"] = op
        if ns not in service_ns:
            invalid("operation namespace %s is not %s's %s" % (ns, path, " or ".join(service_ns)))
        else:
            for error in self.schemas.errors(element):
                invalid("request: %s" % error)
            action = params.get("action")
            expected = self.schemas.actions.get((ns, op), set())
            if action is not None and action not in expected:
                invalid("SOAP action %r is not the wsdl's %r" % (action, sorted(expected)))
        with self.lock:
            problem = self.auth_problem(envelope)
        if problem is not None:
            record["authorized"] = False
            record["errors"].append("auth: " + problem)
            raise Fault(self.auth_status, "Sender", ["ter:NotAuthorized"], "Sender not Authorized")
        if not record["valid"]:
            raise Fault(400, "Sender", ["ter:InvalidArgs"], "; ".join(record["errors"]))
        response = self.operate(op, ns, element, record, path)
        errors = [] if self.hostile else self.schemas.errors(response)
        if errors:
            for error in errors:
                invalid("response: %s" % error)
            raise Fault(500, "Receiver", ["ter:Action"], "the camera built an invalid response")
        return envelope_bytes(response)

    def recorded_json(self):
        with self.lock:
            return json.dumps(self.recorded).encode()


def fmt(value):
    return ("%.6f" % value).rstrip("0").rstrip(".") if value != 0 else "0"


def parse_content_type(value):
    parts = [p.strip() for p in (value or "").split(";")]
    params = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = v.strip().strip('"')
    return parts[0].lower(), params


def fault_element(fault):
    fault_el = etree.Element(q(ENV, "Fault"), nsmap={"env": ENV, "ter": TER})
    code = etree.SubElement(fault_el, q(ENV, "Code"))
    etree.SubElement(code, q(ENV, "Value")).text = "env:" + fault.code
    parent = code
    for sub in fault.subcodes:
        parent = etree.SubElement(parent, q(ENV, "Subcode"))
        etree.SubElement(parent, q(ENV, "Value")).text = sub
    reason = etree.SubElement(fault_el, q(ENV, "Reason"))
    text = etree.SubElement(reason, q(ENV, "Text"))
    text.set(q(XML_NS, "lang"), "en")
    text.text = fault.reason
    return fault_el


def envelope_bytes(content):
    envelope = etree.Element(q(ENV, "Envelope"), nsmap={"env": ENV, "tt": TT, "tptz": TPTZ, "trt": TRT, "ter": TER})
    etree.SubElement(envelope, q(ENV, "Body")).append(content)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def make_handler(camera):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt_, *args):  # one line per request on stderr
            sys.stderr.write("onvif-camera: %s\n" % (fmt_ % args))

        def reply(self, status, body, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def test_events(self):
            """The test control route (see the module doc)."""
            url = urllib.parse.urlsplit(self.path)
            if url.path != TEST_EVENTS_PATH:
                self.reply(404, b"not found\n", "text/plain")
                return
            if self.command == "GET":
                self.reply(200, json.dumps(camera.events.status()).encode(), "application/json")
                return
            self.rfile.read(min(MAX_BODY, int(self.headers.get("Content-Length") or 0)))
            args = dict(urllib.parse.parse_qsl(url.query))
            try:
                kind = args.get("kind", "motion")
                count, rate = int(args.get("count", "1")), float(args.get("rate", "0"))
                state, lens = args.get("state", "alternate"), int(args.get("source", "1"))
                if kind not in EVENT_KINDS or state not in ("true", "false", "alternate") or count < 0 \
                        or rate < 0 or lens < 1:
                    raise ValueError(args)
            except ValueError:
                self.reply(400, b"kind=motion|tampering|video_loss count>=0 rate>=0 "
                           b"state=true|false|alternate source>=1\n", "text/plain")
                return
            live = camera.events.trigger(kind, count, rate, state, lens)
            self.reply(200, json.dumps({"live": live, "count": count}).encode(), "application/json")

        def do_GET(self):
            if self.path.startswith(TEST_EVENTS_PATH):
                self.test_events()
            elif self.path == "/recorded":
                self.reply(200, camera.recorded_json(), "application/json")
            else:
                self.reply(404, b"not found\n", "text/plain")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if self.path.startswith(TEST_EVENTS_PATH):
                self.test_events()
                return
            if length > MAX_BODY or route(self.path) is None:
                self.reply(404 if route(self.path) is None else 413, b"no\n", "text/plain")
                return
            body = self.rfile.read(length)
            status, answer = camera.handle(self.path, self.headers.get("Content-Type"), body)
            self.reply(status, answer, "application/soap+xml; charset=utf-8")

    return Handler


def parse_presets(text):
    presets = []
    for item in filter(None, (text or "").split(",")):
        token, _, name = item.partition(":")
        presets.append((token, name or token))
    return presets


def load_schemas(directory):
    if etree is None:
        raise ImportError("python3-lxml is not installed (apt-get install python3-lxml)")
    return Schemas(directory)


# --- self-test ---------------------------------------------------------------

def soap_request(op_xml, user=None, password=None, created=None, nonce=None):
    header = ""
    if user is not None:
        nonce = nonce or secrets.token_bytes(16)
        created = created or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        header = ('<s:Header><wsse:Security xmlns:wsse="%s" xmlns:wsu="%s"><wsse:UsernameToken>'
                  '<wsse:Username>%s</wsse:Username><wsse:Password Type="%s">%s</wsse:Password>'
                  '<wsse:Nonce>%s</wsse:Nonce><wsu:Created>%s</wsu:Created></wsse:UsernameToken>'
                  '</wsse:Security></s:Header>') % (WSSE, WSU, user, PASSWORD_DIGEST,
                                                    password_digest(nonce, created, password),
                                                    base64.b64encode(nonce).decode(), created)
    return ('<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="%s" xmlns:tptz="%s" xmlns:trt="%s" '
            'xmlns:tt="%s">%s<s:Body>%s</s:Body></s:Envelope>' % (ENV, TPTZ, TRT, TT, header, op_xml)).encode()


GOOD_REQUESTS = [
    "<tptz:ContinuousMove><tptz:ProfileToken>Profile_1</tptz:ProfileToken><tptz:Velocity>"
    "<tt:PanTilt x=\"0.5\" y=\"-0.25\"/><tt:Zoom x=\"0\"/></tptz:Velocity><tptz:Timeout>PT1.5S</tptz:Timeout>"
    "</tptz:ContinuousMove>",
    "<tptz:Stop><tptz:ProfileToken>Profile_1</tptz:ProfileToken><tptz:PanTilt>true</tptz:PanTilt>"
    "<tptz:Zoom>true</tptz:Zoom></tptz:Stop>",
    "<tptz:GotoPreset><tptz:ProfileToken>Profile_1</tptz:ProfileToken><tptz:PresetToken>1</tptz:PresetToken>"
    "</tptz:GotoPreset>",
    "<tptz:GetPresets><tptz:ProfileToken>Profile_1</tptz:ProfileToken></tptz:GetPresets>",
    "<tptz:GetStatus><tptz:ProfileToken>Profile_1</tptz:ProfileToken></tptz:GetStatus>",
    "<trt:GetProfiles/>",
]
EVENT_DECL = 'xmlns:tev="%s" xmlns:wsnt="%s"' % (TEV, WSNT)
CREATE_REQUEST = ("<tev:CreatePullPointSubscription %s><tev:InitialTerminationTime>PT60S</tev:InitialTerminationTime>"
                  "</tev:CreatePullPointSubscription>" % EVENT_DECL)
PULL_REQUEST = ("<tev:PullMessages %s><tev:Timeout>PT1S</tev:Timeout><tev:MessageLimit>100</tev:MessageLimit>"
                "</tev:PullMessages>" % EVENT_DECL)
RENEW_REQUEST = "<wsnt:Renew %s><wsnt:TerminationTime>PT60S</wsnt:TerminationTime></wsnt:Renew>" % EVENT_DECL
UNSUBSCRIBE_REQUEST = "<wsnt:Unsubscribe %s/>" % EVENT_DECL
GOOD_EVENT_REQUESTS = [CREATE_REQUEST, PULL_REQUEST, RENEW_REQUEST, UNSUBSCRIBE_REQUEST,
                       "<tev:CreatePullPointSubscription %s/>" % EVENT_DECL,
                       "<tev:GetEventProperties %s/>" % EVENT_DECL]
BAD_EVENT_REQUESTS = [
    # MessageLimit missing
    "<tev:PullMessages %s><tev:Timeout>PT1S</tev:Timeout></tev:PullMessages>" % EVENT_DECL,
    # Timeout not an xs:duration
    "<tev:PullMessages %s><tev:Timeout>1000</tev:Timeout><tev:MessageLimit>10</tev:MessageLimit>"
    "</tev:PullMessages>" % EVENT_DECL,
    # Renew without TerminationTime
    "<wsnt:Renew %s/>" % EVENT_DECL,
    # InitialTerminationTime neither an xs:dateTime nor an xs:duration
    "<tev:CreatePullPointSubscription %s><tev:InitialTerminationTime>soon</tev:InitialTerminationTime>"
    "</tev:CreatePullPointSubscription>" % EVENT_DECL,
]
BAD_REQUESTS = [
    # no ProfileToken
    "<tptz:ContinuousMove><tptz:Velocity><tt:PanTilt x=\"0.5\" y=\"0\"/></tptz:Velocity></tptz:ContinuousMove>",
    # velocity not a float
    "<tptz:ContinuousMove><tptz:ProfileToken>Profile_1</tptz:ProfileToken><tptz:Velocity>"
    "<tt:PanTilt x=\"fast\" y=\"0\"/></tptz:Velocity></tptz:ContinuousMove>",
    # Timeout not an xs:duration
    "<tptz:ContinuousMove><tptz:ProfileToken>Profile_1</tptz:ProfileToken><tptz:Velocity>"
    "<tt:Zoom x=\"0.5\"/></tptz:Velocity><tptz:Timeout>1.5</tptz:Timeout></tptz:ContinuousMove>",
    # velocity elements in the wrong namespace
    "<tptz:ContinuousMove><tptz:ProfileToken>Profile_1</tptz:ProfileToken><tptz:Velocity>"
    "<tptz:PanTilt x=\"0.5\" y=\"0\"/></tptz:Velocity></tptz:ContinuousMove>",
    # PresetToken missing
    "<tptz:GotoPreset><tptz:ProfileToken>Profile_1</tptz:ProfileToken></tptz:GotoPreset>",
    # token too long for tt:ReferenceToken (max 64)
    "<tptz:GetStatus><tptz:ProfileToken>%s</tptz:ProfileToken></tptz:GetStatus>" % ("x" * 65),
    # unknown element
    "<tptz:GetPresets><tptz:ProfileToken>Profile_1</tptz:ProfileToken><tptz:Extra/></tptz:GetPresets>",
]


def self_test(schemas):
    checks = 0

    def check(condition, what):
        nonlocal checks
        checks += 1
        if not condition:
            raise SystemExit("SELF-TEST FAILED: %s" % what)

    def op_of(xml):
        envelope = etree.fromstring(soap_request(xml), safe_parser())
        return envelope.find(q(ENV, "Body"))[0]

    for xml in GOOD_REQUESTS:
        errors = schemas.errors(op_of(xml))
        check(not errors, "valid request rejected: %s: %s" % (xml[:60], errors))
    for xml in BAD_REQUESTS:
        check(schemas.errors(op_of(xml)), "invalid request accepted: %s" % xml[:90])
    check(schemas.actions.get((TPTZ, "ContinuousMove")) == {TPTZ + "/ContinuousMove"}, "soapAction of ContinuousMove")
    check(schemas.actions.get((TRT, "GetProfiles")) == {TRT + "/GetProfiles"}, "soapAction of GetProfiles")
    check(schemas.actions.get((TEV, "PullMessages")) == {PULL_ACTION}, "soapAction of PullMessages")
    check(RENEW_ACTION in schemas.actions.get((WSNT, "Renew"), ()), "soapAction of Renew")
    # Responses: every one the camera builds is valid; broken ones are not.
    camera = Camera(schemas, presets=[("1", "Ingresso"), ("2", "Rotatoria")])
    for xml in GOOD_REQUESTS:
        element = op_of(xml)
        response = camera.operate(etree.QName(element).localname, etree.QName(element).namespace, element, {})
        check(not schemas.errors(response), "camera response invalid: %s" % schemas.errors(response))
    broken = camera.profiles_response()
    broken[0].remove(broken[0].find(q(TT, "Name")))
    check(schemas.errors(broken), "GetProfilesResponse without Profile Name accepted")
    status = op_of(GOOD_REQUESTS[4])
    broken = camera.operate("GetStatus", TPTZ, status, {})
    broken[0].remove(broken[0].find(q(TT, "UtcTime")))
    check(schemas.errors(broken), "PTZStatus without UtcTime accepted")
    broken = camera.operate("GetStatus", TPTZ, status, {})
    broken[0].find(q(TT, "MoveStatus"))[0].text = "SPINNING"
    check(schemas.errors(broken), "MoveStatus SPINNING accepted")
    # The hostile answers stay under the client's 1 MiB, and their JSON would not.
    hostile = Camera(schemas, hostile=True)
    body = envelope_bytes(hostile.operate("GetPresets", TPTZ, op_of(GOOD_REQUESTS[3]), {}))
    presets = body.count(b"<tptz:Preset ")
    check(900_000 < len(body) < MAX_BODY and presets > 3000, "hostile presets: %d bytes" % len(body))
    check(presets * (len(HOSTILE_NAME) * 2 + 20) > MAX_BODY, "hostile presets as JSON exceed 1 MiB")
    try:
        hostile.operate("GotoPreset", TPTZ, op_of(GOOD_REQUESTS[2]), {})
        check(False, "hostile GotoPreset answered")
    except Fault as fault:
        body = envelope_bytes(fault_element(fault))
        check(len(body) < MAX_BODY and HOSTILE_URL.encode() in body, "hostile fault: %d bytes" % len(body))
        check(fault.reason.count('"') * 2 > MAX_BODY, "hostile fault as JSON exceeds 1 MiB")
    events_self_test(schemas, check, op_of)
    # A short session over HTTP with digest auth.
    camera = Camera(schemas, user="admin", password="secret", presets=[("1", "Ingresso")])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(camera))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    def post(path, body, content_type="application/soap+xml; charset=utf-8"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", path, body, {"Content-Type": content_type})
        answer = conn.getresponse()
        return answer.status, answer.read()

    status, body = post("/onvif/ptz_service", soap_request(GOOD_REQUESTS[0], "admin", "secret"))
    check(status == 200 and b"ContinuousMoveResponse" in body, "authorized ContinuousMove: %d %s" % (status, body))
    status, body = post("/onvif/ptz_service", soap_request(GOOD_REQUESTS[4], "admin", "wrong"))
    check(status == 400 and b"ter:NotAuthorized" in body, "wrong password: %d %s" % (status, body))
    nonce = secrets.token_bytes(16)
    request = soap_request(GOOD_REQUESTS[4], "admin", "secret", nonce=nonce)
    check(post("/onvif/ptz_service", request)[0] == 200, "fresh nonce")
    check(post("/onvif/ptz_service", request)[0] == 400, "replayed nonce accepted")
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    check(post("/onvif/ptz_service", soap_request(GOOD_REQUESTS[4], "admin", "secret", created=old))[0] == 400,
          "Created an hour old accepted")
    status, body = post("/onvif/ptz_service", soap_request(BAD_REQUESTS[1], "admin", "secret"))
    check(status == 400 and b"ter:InvalidArgs" in body, "invalid request answered %d" % status)
    status, body = post("/onvif/ptz_service", soap_request(GOOD_REQUESTS[2].replace(">1<", ">9<"), "admin", "secret"))
    check(status == 400 and b"ter:NoToken" in body, "unknown preset answered %d %s" % (status, body))
    status, _ = post("/onvif/ptz_service", soap_request(GOOD_REQUESTS[4], "admin", "secret"), "text/xml")
    check(status == 415, "SOAP 1.1 content type accepted")
    records = json.loads(camera.recorded_json())
    check([r["valid"] for r in records] == [True, True, True, True, True, False, True, False],
          "recorded validity: %s" % [(r["op"], r["valid"], r["errors"]) for r in records])
    check(records[0]["pan"] == 0.5 and records[0]["tilt"] == -0.25 and records[0]["timeout"] == "PT1.5S",
          "recorded ContinuousMove: %s" % records[0])
    server.shutdown()
    print("SELF-TEST OK %d checks (schemas from %s)" % (checks, schemas.directory), flush=True)


def events_self_test(schemas, check, op_of):
    """The Events service: requests and responses against events.wsdl and
    b-2.xsd, then a pull-point session over HTTP driven by the test route."""
    for xml in GOOD_EVENT_REQUESTS:
        errors = schemas.errors(op_of(xml))
        check(not errors, "valid events request rejected: %s: %s" % (xml[:70], errors))
    for xml in BAD_EVENT_REQUESTS:
        check(schemas.errors(op_of(xml)), "invalid events request accepted: %s" % xml[:90])
    camera = Camera(schemas)
    created = camera.operate("CreatePullPointSubscription", TEV, op_of(CREATE_REQUEST), {})
    path = urllib.parse.urlsplit(created.findtext("%s/%s" % (q(TEV, "SubscriptionReference"), q(WSA, "Address")))).path
    for kind in EVENT_KINDS:
        camera.events.trigger(kind, 2, 0, "alternate", 2)
    for op, ns, xml in (("CreatePullPointSubscription", TEV, CREATE_REQUEST), ("PullMessages", TEV, PULL_REQUEST),
                        ("GetEventProperties", TEV, GOOD_EVENT_REQUESTS[5]), ("Renew", WSNT, RENEW_REQUEST),
                        ("Unsubscribe", WSNT, UNSUBSCRIBE_REQUEST)):
        record = {}
        at = path if op in PULLPOINT_OPS else "/onvif/events_service"
        response = camera.operate(op, ns, op_of(xml), record, at)
        check(not schemas.errors(response), "%s response invalid: %s" % (op, schemas.errors(response)))
        if op == "PullMessages":
            check(record.get("messages") == 6, "6 messages pulled, not %s" % record.get("messages"))
            text = etree.tostring(response).decode()
            for expected in ('Value="VideoSourceConfig_2"', 'Name="IsMotion" Value="true"',
                             'Name="IsMotion" Value="false"', ">tns1:VideoSource/SignalLoss<",
                             ">tns1:VideoSource/GlobalSceneChange/ImagingService<", 'PropertyOperation="Changed"'):
                check(expected in text, "PullMessagesResponse lacks %s" % expected)
    broken = notification("motion", True, 1, time.time())
    del broken.find("%s/%s" % (q(WSNT, "Message"), q(TT, "Message"))).attrib["UtcTime"]
    holder = etree.Element(q(TEV, "PullMessagesResponse"), nsmap=EVENT_NSMAP)
    etree.SubElement(holder, q(TEV, "CurrentTime")).text = xs_datetime(time.time())
    etree.SubElement(holder, q(TEV, "TerminationTime")).text = xs_datetime(time.time())
    holder.append(broken)
    check(schemas.errors(holder), "tt:Message without UtcTime accepted")
    # Over HTTP: subscribe, raise, pull within the timeout, renew, expire.
    camera = Camera(schemas, user="admin", password="secret", max_subscription=2.0)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(camera))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    camera.events.base = "http://127.0.0.1:%d" % port

    def post(path, body, action=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        content_type = "application/soap+xml; charset=utf-8" + ('; action="%s"' % action if action else "")
        conn.request("POST", path, body, {"Content-Type": content_type})
        answer = conn.getresponse()
        return answer.status, answer.read()

    status, body = post("/onvif/events_service", soap_request(CREATE_REQUEST, "admin", "secret"))
    check(status == 200 and b"SubscriptionReference" in body, "CreatePullPointSubscription: %d %s" % (status, body))
    address = etree.fromstring(body, safe_parser()).find(".//" + q(WSA, "Address")).text
    path = urllib.parse.urlsplit(address).path
    check(path.startswith(PULLPOINT_PREFIX) and address.startswith("http://127.0.0.1:%d/" % port), address)
    check(post(path, soap_request(PULL_REQUEST, "admin", "wrong"))[0] == 400, "PullMessages with a wrong password")
    started = time.monotonic()
    status, body = post(path, soap_request(PULL_REQUEST, "admin", "secret"), PULL_ACTION)
    waited = time.monotonic() - started
    check(status == 200 and b"NotificationMessage" not in body and 0.9 < waited < 2, "empty pull %.2f s" % waited)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/test/events?kind=motion&count=3")
    answer = conn.getresponse()
    check(answer.status == 200 and json.loads(answer.read())["live"] == 1, "test route")
    status, body = post(path, soap_request(PULL_REQUEST, "admin", "secret"), PULL_ACTION)
    check(status == 200 and body.count(b"<wsnt:NotificationMessage") == 3, "3 messages: %d %s" % (status, body[:300]))
    status, _ = post(path, soap_request(PULL_REQUEST, "admin", "secret"), TEV + "/PullMessages")
    check(status == 400, "PullMessages with a wrong SOAPAction answered %d" % status)
    time.sleep(0.6)
    status, body = post(path, soap_request(RENEW_REQUEST, "admin", "secret"), RENEW_ACTION)
    check(status == 200 and b"RenewResponse" in body, "Renew: %d %s" % (status, body))
    time.sleep(0.6)
    check(post(path, soap_request(PULL_REQUEST.replace("PT1S", "PT0S"), "admin", "secret"))[0] == 200,
          "a renewed subscription expired")
    time.sleep(2.0)
    status, body = post(path, soap_request(PULL_REQUEST, "admin", "secret"))
    check(status == 400 and b"ResourceUnknown" in body, "expired subscription answered %d %s" % (status, body))
    status, body = post(PULLPOINT_PREFIX + "999", soap_request(PULL_REQUEST, "admin", "secret"))
    check(status == 400 and b"env:Fault" in body, "unknown subscription answered %d" % status)
    status, body = post("/onvif/events_service", soap_request(PULL_REQUEST, "admin", "secret"))
    check(status == 500 and b"ActionNotSupported" in body, "PullMessages at the events service: %d" % status)
    records = json.loads(camera.recorded_json())
    check([r["op"] for r in records if not r["valid"]] == ["PullMessages"],
          "only the pull with the wrong SOAPAction invalid: %s" % [(r["op"], r["errors"]) for r in records])
    server.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user")
    parser.add_argument("--password", default="")
    parser.add_argument("--presets", default="1:Ingresso,2:Rotatoria")
    parser.add_argument("--auth-status", type=int, default=400, choices=(400, 401))
    parser.add_argument("--default-timeout", type=float, default=10.0)
    parser.add_argument("--hostile", action="store_true",
                        help="answer GetPresets and GotoPreset with oversized, hostile content")
    parser.add_argument("--max-subscription", type=float, default=3600.0,
                        help="longest a pull-point subscription is granted, seconds (cameras cap it)")
    parser.add_argument("--schemas", default=os.environ.get("PONTE_ONVIF_WSDL") or DEFAULT_SCHEMAS)
    parser.add_argument("--check", action="store_true", help="exit 0 when lxml and the schemas load")
    parser.add_argument("--self-test", action="store_true")
    opts = parser.parse_args()
    try:
        schemas = load_schemas(opts.schemas)
    except Exception as e:  # noqa: BLE001 - said and exit 2
        print("MISSING %s" % e, flush=True)
        sys.exit(2)
    if opts.check:
        print("OK schemas from %s" % opts.schemas, flush=True)
        return
    if opts.self_test:
        self_test(schemas)
        return
    camera = Camera(schemas, opts.user, opts.password, parse_presets(opts.presets), opts.auth_status,
                    opts.default_timeout, opts.hostile, opts.max_subscription)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", opts.port), make_handler(camera))
    server.daemon_threads = True
    camera.events.base = "http://127.0.0.1:%d" % server.server_address[1]
    print("LISTENING %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
