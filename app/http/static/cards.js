// Cards for citations and search hits, and the viewer that opens the cited asset at the cited
// place: a picture, a video or recording from the cited second, a PDF at the cited page, a
// text file with the cited passage marked.

import { apiFetch, mediaUrl, releaseUrl } from "./api.js";

/** "0:04", "1:02:03": a time in a video or recording. */
export function clock(seconds) {
  const s = Math.floor(seconds);
  const parts = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const [h, m, sec] = parts.map((n) => String(n).padStart(2, "0"));
  return parts[0] ? `${Number(h)}:${m}:${sec}` : `${Number(m)}:${sec}`;
}

/** Where in its file a hit is: "page 3", "0:04–0:08", or "" for a whole file. */
export function place(locator) {
  if (locator.page != null) return `page ${locator.page}`;
  if (locator.start_s == null) return "";
  const end = locator.end_s != null ? `–${clock(locator.end_s)}` : "";
  return `${clock(locator.start_s)}${end}`;
}

const SIGNALS = [
  ["clip", "picture"],
  ["text", "meaning"],
  ["bm25", "words"],
];

/** A new element with a class and text (text only: never HTML). */
export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

let cardCount = 0;

/** A card for a hit (a citation when `number` is given); activating it calls `open`. */
export function card(hit, { number, id, open }) {
  const item = element("li", "card");
  if (id) item.id = id;
  const button = element("button", "card-open");
  button.type = "button";
  button.dataset.modality = hit.modality;
  const where = place(hit.locator);
  const label = number != null ? `source ${number}: ` : "";
  button.setAttribute("aria-label", `Open ${label}${hit.source}${where ? `, ${where}` : ""}`);

  const thumbUrl = hit.segment_thumbnail_url || hit.thumbnail_url;
  if (thumbUrl) {
    const img = element("img", "thumb");
    img.alt = "";
    img.decoding = "async";
    mediaUrl(thumbUrl, { keep: true }).then(
      (src) => (img.src = src),
      () => img.replaceWith(element("span", "thumb excerpt", hit.snippet)),
    );
    button.append(img);
  } else {
    button.append(element("span", "thumb excerpt", hit.snippet)); // words have no picture
  }
  if (number != null) button.append(element("span", "number", `[${number}]`));
  const slash = hit.source.lastIndexOf("/");
  button.append(element("span", "name", hit.source.slice(slash + 1)));
  if (slash > 0) button.append(element("span", "folder", hit.source.slice(0, slash + 1)));
  button.append(element("span", "place", [hit.modality, where].filter(Boolean).join(" · ")));
  const scores = SIGNALS.filter(([key]) => hit.scores[key] != null).map(
    ([key, name]) => `${name} ${hit.scores[key].toFixed(2)}`,
  );
  const scoreLine = element("span", "scores", scores.join(" · "));
  scoreLine.id = `scores-${++cardCount}`;
  scoreLine.title = "Score per signal: picture (CLIP), meaning (text embedding), words (BM25)";
  button.setAttribute("aria-describedby", scoreLine.id); // the label names the file only
  button.append(scoreLine);
  button.addEventListener("click", () => open(hit, button));
  item.append(button);
  return item;
}

/** The viewer: one <dialog>; Escape closes it (the browser's own), focus returns to the card. */
export class Viewer {
  constructor(dialog) {
    this.dialog = dialog;
    this.title = dialog.querySelector("#viewer-title");
    this.body = dialog.querySelector("#viewer-body");
    this.newTab = dialog.querySelector("#viewer-new-tab");
    this.urls = []; // blob: URLs of what is shown, released on close
    this.opener = null;
    this.showing = null;
    dialog.querySelector("#viewer-close").addEventListener("click", () => dialog.close());
    // A click on the backdrop lands on the dialog itself, outside its content box.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
    dialog.addEventListener("close", () => this.clear());
  }

  async open(hit, opener) {
    this.clear();
    const showing = {}; // this opening: closing the viewer (or opening another) ends it
    this.showing = showing;
    this.opener = opener;
    const where = place(hit.locator);
    this.title.textContent = where ? `${hit.source} (${where})` : hit.source;
    this.body.replaceChildren(element("p", "loading", "Loading…"));
    this.newTab.hidden = true;
    this.dialog.showModal();
    try {
      // Fetched once (with a key, as a blob): shown here and opened in a new tab alike.
      const src = await mediaUrl(hit.content_url);
      if (this.showing !== showing) return releaseUrl(src); // closed while it loaded
      this.urls.push(src);
      const hash = hit.link.indexOf("#");
      const fragment = hash < 0 ? "" : hit.link.slice(hash); // "#t=12.5", "#page=3"
      const shown = hit.modality === "text" ? await this.passage(hit) : media(hit, src, fragment);
      if (this.showing !== showing) return; // closed meanwhile: clear() released src
      this.body.replaceChildren(shown);
      this.newTab.href = src + fragment;
      this.newTab.hidden = false;
    } catch (error) {
      if (this.showing !== showing) return;
      const problem = error.problem || { title: "Error", detail: String(error.message) };
      this.body.replaceChildren(element("p", "error", `${problem.title}: ${problem.detail}`));
    }
  }

  /** A text file with the cited characters marked and scrolled to. */
  async passage(hit) {
    const text = await (await apiFetch(hit.content_url)).text();
    const { char_start: start, char_end: end } = hit.locator;
    const pre = element("pre", "passage");
    pre.tabIndex = 0; // scrollable: reachable by keyboard
    if (start == null || end == null) {
      pre.textContent = text;
      return pre;
    }
    const mark = element("mark", null, text.slice(start, end));
    pre.append(text.slice(0, start), mark, text.slice(end));
    requestAnimationFrame(() => mark.scrollIntoView({ block: "center" }));
    return pre;
  }

  clear() {
    for (const player of this.body.querySelectorAll("video, audio")) player.pause();
    this.body.replaceChildren();
    for (const url of this.urls.splice(0)) releaseUrl(url);
    this.opener?.focus();
    this.opener = this.showing = null;
  }
}

/** The element that shows a picture, a PDF at its page, or plays a video or recording from the
 * cited second. */
function media(hit, src, fragment) {
  const { locator } = hit;
  if (hit.modality === "video" || hit.modality === "audio") {
    const player = element(hit.modality, "player");
    player.controls = true;
    player.preload = "auto";
    player.setAttribute("playsinline", "");
    player.setAttribute("aria-label", `${hit.source}, from ${clock(locator.start_s || 0)}`);
    // Seek once the player knows the duration, then play (the click that opened the viewer
    // allows playback with sound).
    player.addEventListener(
      "loadedmetadata",
      () => {
        player.currentTime = locator.start_s || 0;
        player.play().catch(() => {});
      },
      { once: true },
    );
    player.src = src;
    return player;
  }
  if (hit.modality === "pdf") {
    const frame = element("iframe", "pdf");
    frame.title = `${hit.source}${locator.page != null ? `, page ${locator.page}` : ""}`;
    frame.src = src + fragment; // the browser's PDF viewer opens at #page=N
    return frame;
  }
  const img = element("img", "picture");
  img.alt = hit.title || hit.source;
  img.src = src;
  return img;
}
