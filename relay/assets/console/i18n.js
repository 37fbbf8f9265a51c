// Italian and English for the console. The language is the operator's last
// choice (kept in this browser), else the browser's.

const TEXT = {
  it: {
    otherLanguage: 'English', logout: 'Esci', login: 'Entra', loginTitle: 'Accedi alla sala video',
    user: 'Utente', password: 'Password', search: 'Cerca per nome, zona o etichetta',
    layout: 'Disposizione', savedLayouts: 'Disposizioni salvate', layoutName: 'Nome disposizione',
    save: 'Salva', delete: 'Elimina', share: 'Copia link', pickLayout: 'Disposizioni salvate…',
    saved: 'Disposizione «{name}» salvata.', deleted: 'Disposizione «{name}» eliminata.',
    linkCopied: 'Link copiato negli appunti.', linkReady: 'Link: {url}',
    needName: 'Dai un nome alla disposizione.', loggedInAs: '{who}',
    empty: 'Trascina qui una telecamera', loading: 'Caricamento…', connecting: 'Connessione…',
    notLive: 'NON IN DIRETTA', noPicture: 'nessuna immagine nuova da {secs} s',
    paused: 'sospesa dalla sala master: {reason}', upstreamLost: 'collegamento con {upstream} perso da {secs} s',
    tooOld: 'immagine vecchia di {secs} s', behind: 'in ritardo', ageTitle: 'Età dell\'immagine (ripresa → schermo)',
    ageRelay: 'Età da quando questo relay ha inviato l\'immagine (l\'ora di ripresa della telecamera non è nota)',
    noFirstFrame: 'nessuna immagine decodificata in {secs} s',
    ended: 'Flusso chiuso: {why}', retrying: '{why} — nuovo tentativo tra {secs} s',
    subBadge: 'Sottoflusso H.264', subBadgeTitle: 'Il browser non riceve H.265: si vede il sottoflusso H.264',
    transcodeBadge: 'H.264 transcodificato', snapshot: 'Istantanea', tourBtn: 'Giro', fullBtn: 'Schermo intero',
    clearBtn: 'Svuota', tourTitle: 'Giro di telecamere', tourEvery: 'Secondi per telecamera', startTour: 'Avvia giro',
    cancel: 'Annulla', close: 'Chiudi', keysTitle: 'Tasti', linkUp: 'Centrale: collegata ({rtt} ms)',
    linkDown: 'Centrale {peer}: SCOLLEGATA', noLink: 'Centrale: nessun collegamento', rate: 'In arrivo: {mbps} Mbit/s',
    budget: 'Banda: {mbps} di {budget} Mbit/s', pausedTiles: 'Sospese: {list}', noneFound: 'Nessuna telecamera trovata.',
    snapshotSaved: 'Istantanea salvata: {file}', wallReadOnly: 'Parete: sola lettura',
    back30: '−30 s', back5m: '−5 min', liveBtn: 'Diretta', exportBtn: 'Esporta', pickTime: 'Vai all\'ora',
    replay: 'REGISTRATO', replayTitle: 'Registrazione: ora di ripresa dell\'immagine',
    timelineTitle: 'Registrazioni dell\'ultima ora: clic per rivedere da quel punto',
    exporting: 'Esportazione di {camera} in corso…', exported: 'Esportato {file} (SHA-256 {sha}): ', exportManifest: 'manifesto firmato',
    exportFailed: 'Esportazione non riuscita: {why}',
    failedOver: 'Relay non raggiungibile: passato a {peer}', backHome: 'Relay di riserva non raggiungibile: tornato a {relay}',
    noPeer: 'Relay non raggiungibile, e nessun altro relay del sito risponde',
    incidentsTitle: 'Incidenti', offersTitle: 'Condivisioni offerte', sharesTitle: 'Condivisioni',
    shareFrom: '{by} condivide: {cameras}', timeLeft: 'ancora {left}', accept: 'Accetta',
    shareAccepted: 'accettata da {who}', shareEnded: 'terminata: {why}', shareEndedNoReason: 'terminata',
    sharePlaced: 'Condivisione accettata: {cameras} sulla parete.', noShares: 'Nessuna condivisione.',
    askTitle: 'Chiedi una telecamera', askCamera: 'Telecamera (come indicata dalla sala master)', askReason: 'Motivo',
    askSend: 'Chiedi', askNeedBoth: 'Indica la telecamera e il motivo.', askSent: 'Richiesta {id} inviata alla sala master.',
    askPending: 'in attesa della sala master', askApproved: 'approvata da {by} fino alle {until}',
    askRefused: 'rifiutata da {by}', askBy: '{operator}, {at}', noAsks: 'Nessuna richiesta.',
    askPlaced: 'Richiesta approvata: {camera} sulla parete.',
    alarmsTitle: 'Allarmi', ack: 'Presa visione', ackedBy: 'Visto da: {list}', notAcked: 'Non ancora visto',
    suppressedN: '+{n} simili', noAlarms: 'Nessun allarme.', alarmMotion: 'Movimento', alarmTampering: 'Manomissione',
    alarmVideoLoss: 'Perdita video', alarmOffline: 'Non raggiungibile', alarmStalled: 'Immagine ferma',
    alarmRecovered: 'Ripristinata', revoked: 'accesso revocato: {why}',
    keys: [['1–9', 'Seleziona il riquadro'], ['Invio', 'Schermo intero'], ['Esc', 'Indietro'],
      ['← ↑ → ↓', 'Muovi la dome selezionata (tieni premuto)'], ['+ / −', 'Zoom (tieni premuto)'], ['?', 'Questo elenco']],
  },
  en: {
    otherLanguage: 'Italiano', logout: 'Log out', login: 'Log in', loginTitle: 'Log in to the video wall',
    user: 'User', password: 'Password', search: 'Search by name, zone or tag',
    layout: 'Layout', savedLayouts: 'Saved layouts', layoutName: 'Layout name',
    save: 'Save', delete: 'Delete', share: 'Copy link', pickLayout: 'Saved layouts…',
    saved: 'Layout “{name}” saved.', deleted: 'Layout “{name}” deleted.',
    linkCopied: 'Link copied to the clipboard.', linkReady: 'Link: {url}',
    needName: 'Name the layout first.', loggedInAs: '{who}',
    empty: 'Drag a camera here', loading: 'Loading…', connecting: 'Connecting…',
    notLive: 'NOT LIVE', noPicture: 'no new picture for {secs} s',
    paused: 'paused by the master room: {reason}', upstreamLost: 'link to {upstream} lost {secs} s ago',
    tooOld: 'picture {secs} s old', behind: 'behind', ageTitle: 'Picture age (capture → screen)',
    ageRelay: 'Age since this relay sent the picture (the camera\'s capture time is unknown)',
    noFirstFrame: 'no picture decoded in {secs} s',
    ended: 'Stream ended: {why}', retrying: '{why} — retrying in {secs} s',
    subBadge: 'H.264 substream', subBadgeTitle: 'This browser cannot receive H.265: showing the H.264 substream',
    transcodeBadge: 'H.264 transcode', snapshot: 'Snapshot', tourBtn: 'Tour', fullBtn: 'Full screen',
    clearBtn: 'Clear', tourTitle: 'Camera tour', tourEvery: 'Seconds per camera', startTour: 'Start tour',
    cancel: 'Cancel', close: 'Close', keysTitle: 'Keys', linkUp: 'Master: connected ({rtt} ms)',
    linkDown: 'Master {peer}: DISCONNECTED', noLink: 'Master: no link', rate: 'Receiving: {mbps} Mbit/s',
    budget: 'Budget: {mbps} of {budget} Mbit/s', pausedTiles: 'Paused: {list}', noneFound: 'No camera found.',
    snapshotSaved: 'Snapshot saved: {file}', wallReadOnly: 'Wall: read only',
    back30: '−30 s', back5m: '−5 min', liveBtn: 'Live', exportBtn: 'Export', pickTime: 'Go to time',
    replay: 'RECORDED', replayTitle: 'Recording: when the picture was taken',
    timelineTitle: 'Recordings of the last hour: click to replay from there',
    exporting: 'Exporting {camera}…', exported: 'Exported {file} (SHA-256 {sha}): ', exportManifest: 'signed manifest',
    exportFailed: 'Export failed: {why}',
    failedOver: 'Relay unreachable: switched to {peer}', backHome: 'Backup relay unreachable: back to {relay}',
    noPeer: 'Relay unreachable, and no other relay of the site answers',
    incidentsTitle: 'Incidents', offersTitle: 'Shares offered', sharesTitle: 'Shares',
    shareFrom: '{by} shares: {cameras}', timeLeft: '{left} left', accept: 'Accept',
    shareAccepted: 'accepted by {who}', shareEnded: 'ended: {why}', shareEndedNoReason: 'ended',
    sharePlaced: 'Share accepted: {cameras} on the wall.', noShares: 'No shares.',
    askTitle: 'Ask for a camera', askCamera: 'Camera (as the master room names it)', askReason: 'Reason',
    askSend: 'Ask', askNeedBoth: 'Name the camera and give a reason.', askSent: 'Request {id} sent to the master room.',
    askPending: 'waiting for the master room', askApproved: 'approved by {by} until {until}',
    askRefused: 'refused by {by}', askBy: '{operator}, {at}', noAsks: 'No requests.',
    askPlaced: 'Request approved: {camera} on the wall.',
    alarmsTitle: 'Alarms', ack: 'Acknowledge', ackedBy: 'Seen by: {list}', notAcked: 'Not acknowledged yet',
    suppressedN: '+{n} similar', noAlarms: 'No alarms.', alarmMotion: 'Motion', alarmTampering: 'Tampering',
    alarmVideoLoss: 'Video loss', alarmOffline: 'Offline', alarmStalled: 'Picture stalled',
    alarmRecovered: 'Recovered', revoked: 'access revoked: {why}',
    keys: [['1–9', 'Select a tile'], ['Enter', 'Full screen'], ['Esc', 'Back'],
      ['← ↑ → ↓', 'Steer the selected dome (hold)'], ['+ / −', 'Zoom (hold)'], ['?', 'This list']],
  },
};

let lang = pick();

function pick() {
  try {
    const saved = localStorage.getItem('ponte.lang');
    if (saved === 'it' || saved === 'en') return saved;
  } catch (err) {
    // Storage may be off: the browser's language decides.
  }
  return (navigator.language || 'it').toLowerCase().startsWith('en') ? 'en' : 'it';
}

export function language() {
  return lang;
}

export function setLanguage(next) {
  lang = next === 'en' ? 'en' : 'it';
  try {
    localStorage.setItem('ponte.lang', lang);
  } catch (err) {
    // Not kept: fine.
  }
  document.documentElement.lang = lang;
  apply(document);
}

// Text for `key` in the current language, `{name}` placeholders filled.
export function t(key, vars = {}) {
  const s = TEXT[lang][key] ?? TEXT.en[key] ?? key;
  return typeof s === 'string' ? s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? '')) : s;
}

// Adds texts of another page that shares this module (the master room's
// console): `{ it: {...}, en: {...} }`, the same keys in both.
export function define(texts) {
  for (const l of ['it', 'en']) Object.assign(TEXT[l], texts[l] || {});
}

// Fills `data-i18n*` attributes under `root`.
export function apply(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
}
