#!/usr/bin/python3
"""A real RTSP camera for ponte's end-to-end tests: GStreamer's RTSP server
serving live H.264 (/h264) and H.265 (/h265) test patterns.

usage: rtsp_server.py PORT [--protocols tcp|udp|tcp+udp] [--user U --password P]
                           [--record DIR] [--mount PATH=CODEC ...]
Prints `ready port=N` once listening, `client connected`, `session N` per
RTSP session created (SETUP), `transport ...` per SETUP, `client closed`.
--record tees the encoder's output (Annex-B, exactly what is packetized) to
DIR/<codec>-<n>.es, one file per pipeline run, so tests can compare bytes.
--mount serves a codec's stream at a vendor-style path too (e.g.
/Streaming/Channels/101=h264), so a guide's camera URL can be used as is.
Run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0).
"""
import argparse
import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

ENCODERS = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=500 ! video/x-h264,profile=baseline",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=500 ! video/x-h265",
}
PROTOCOLS = {"tcp": GstRtsp.RTSPLowerTrans.TCP, "udp": GstRtsp.RTSPLowerTrans.UDP,
             "tcp+udp": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP}
args = argparse.ArgumentParser()
args.add_argument("port")
args.add_argument("--protocols", default="tcp+udp", choices=PROTOCOLS)
args.add_argument("--user")
args.add_argument("--password")
args.add_argument("--record")
args.add_argument("--mount", action="append", default=[])
opts = args.parse_args()
Gst.init(None)
say = lambda *words: print(*words, flush=True)  # noqa: E731
counts = {"session": 0, "run": 0}

server = GstRtspServer.RTSPServer()
server.set_service(opts.port)
if opts.user:
    auth = GstRtspServer.RTSPAuth()
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    auth.add_digest(opts.user, opts.password, token)
    server.set_auth(auth)

for codec, encoder in ENCODERS.items():
    record = f" t. ! queue ! filesink name=rec buffer-mode=unbuffered sync=false async=false" if opts.record else ""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! "
        f"{encoder},stream-format=byte-stream,alignment=au ! tee name=t t. ! queue ! rtp{codec}pay name=pay0 pt=96{record} )")
    factory.set_shared(True)  # one pipeline for every client, as a camera has one encoder
    factory.set_protocols(PROTOCOLS[opts.protocols])
    factory.add_role_from_structure(Gst.Structure.from_string(
        "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])

    def configure(_factory, media, codec=codec):
        counts["run"] += 1
        if opts.record:
            path = f"{opts.record}/{codec}-{counts['run']}.es"
            media.get_element().get_by_name("rec").set_property("location", path)
            say(f"recording {path}")
    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(f"/{codec}", factory)
    for extra in opts.mount:
        path, _, wanted = extra.partition("=")
        if wanted == codec:
            server.get_mount_points().add_factory(path, factory)


def on_setup(_client, ctx):
    _, transport = ctx.request.get_header(GstRtsp.RTSPHeaderField.TRANSPORT, 0)
    say(f"transport {transport}")


def on_session(_client, _session):
    counts["session"] += 1
    say(f"session {counts['session']}")


def on_client(_server, client):
    say("client connected")
    client.connect("setup-request", on_setup)
    client.connect("new-session", on_session)
    client.connect("closed", lambda _c: say("client closed"))


server.connect("client-connected", on_client)
server.attach(None)
say(f"ready port={server.get_bound_port()}")
GLib.MainLoop().run()
