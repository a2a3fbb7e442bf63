// Talking to the service: the API key, problem details, and server-sent events read from a
// POST (EventSource can only GET, so the stream is read from fetch's body by hand).

const KEY_STORAGE = "mmrag.apiKey";

/** A failed request, carrying the service's problem details (RFC 9457: title, detail…). */
export class ProblemError extends Error {
  constructor(problem) {
    super(problem.detail);
    this.problem = problem;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetApiKey() {
  sessionStorage.removeItem(KEY_STORAGE);
  for (const url of thumbnails.values()) url.then(URL.revokeObjectURL, () => {});
  thumbnails.clear();
}

// Set by the page: shows the key prompt, resolves to the key entered or null (given up).
let keyPrompt = async () => null;

export function whenKeyNeeded(prompt) {
  keyPrompt = prompt;
}

/** The problem details of a failed response; a body that is not one still gives a title. */
export async function problemOf(response) {
  let body = {};
  if ((response.headers.get("content-type") || "").includes("json")) {
    body = await response.json().catch(() => ({}));
  }
  return new ProblemError({
    ...body,
    status: response.status,
    title: body.title || response.statusText || "Error",
    detail: body.detail || `The service answered ${response.status}.`,
  });
}

/**
 * fetch() with the API key. A 401 asks for a key and sends the request again with it, until
 * the service takes the key or the person gives up. Any other failure throws a ProblemError.
 */
export async function apiFetch(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers);
    const key = apiKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...init, headers });
    if (response.ok) return response;
    const problem = await problemOf(response);
    if (response.status !== 401) throw problem;
    // Refused with a key that has been replaced meanwhile (a request that was under way while
    // the person typed): try the new key before asking again.
    if (apiKey() !== key) continue;
    if (!(await keyPrompt(problem.problem))) throw problem;
  }
}

export async function getJson(path) {
  return (await apiFetch(path)).json();
}

/** The events of a text/event-stream response as {event, data}, data parsed as JSON. */
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    // A final "\r" may be the first half of a "\r\n" split between two chunks: keep it.
    const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
    const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
    buffer = lines.pop() + buffer.slice(cut);
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
        event = "message";
        data = [];
        continue;
      }
      const colon = line.indexOf(":");
      if (colon === 0) continue; // a comment (keep-alive)
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = text;
      else if (field === "data") data.push(text);
    }
  }
}

// Thumbnails fetched with the key, by URL: a card shown again reuses its blob.
const thumbnails = new Map();

/**
 * A URL an <img>, <video>, <audio> or <iframe> can load. Without a key it is the URL itself
 * (the browser streams it, with Range requests for seeking). With a key it is a blob: URL of
 * the file fetched with the key, because those elements cannot send an Authorization header;
 * such a file arrives whole before it plays. `keep`: cache it (thumbnails); otherwise the
 * caller revokes it when done.
 */
export async function mediaUrl(url, { keep = false } = {}) {
  if (!apiKey()) return url;
  const [path, fragment] = url.split("#");
  const fetchBlob = () =>
    apiFetch(path)
      .then((r) => r.blob())
      .then(URL.createObjectURL);
  let blob;
  if (keep) {
    if (!thumbnails.has(path)) {
      const pending = fetchBlob();
      pending.catch(() => thumbnails.delete(path));
      thumbnails.set(path, pending);
    }
    blob = await thumbnails.get(path);
  } else {
    blob = await fetchBlob();
  }
  return fragment ? `${blob}#${fragment}` : blob;
}

/** Releases a URL mediaUrl() made without `keep` (a no-op for the service's own URLs). */
export function releaseUrl(url) {
  if (url?.startsWith("blob:")) URL.revokeObjectURL(url.split("#")[0]);
}
