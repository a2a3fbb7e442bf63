// The chat page: questions answered as a stream from POST /v1/chat, picture searches through
// POST /v1/search, uploads through POST /v1/ingest followed on GET /v1/jobs/{id}.
// Plain modules served as they are: no framework, no build step, nothing from elsewhere.

import {
  apiFetch,
  apiKey,
  forgetApiKey,
  getJson,
  readEvents,
  setApiKey,
  whenKeyNeeded,
} from "./api.js";
import { card, element, Viewer } from "./cards.js";

const $ = (id) => document.getElementById(id);

const messages = $("messages");
const question = $("question");
const viewer = new Viewer($("viewer"));
const openViewer = (hit, opener) => viewer.open(hit, opener);

// The conversation so far, as /v1/chat takes it: a follow-up is answered in its context. The
// service accepts 200 messages and trims the history to its own token budget; the oldest turns
// matter least, so only the last ones are sent.
const conversation = [];
const SENT_MESSAGES = 40;
let busy = false;
let replies = 0;

// -- what to search: the filters ---------------------------------------------------------------

function scope() {
  const boxes = document.querySelectorAll('input[name="modality"]:checked');
  return {
    modalities: [...boxes].map((box) => box.value),
    tags: $("tags")
      .value.split(",")
      .map((tag) => tag.trim())
      .filter(Boolean),
    collection: $("collection").value.trim(),
  };
}

// -- messages ----------------------------------------------------------------------------------

function addMessage(role, label) {
  $("intro").hidden = true;
  const message = element("article", `message ${role}`);
  message.setAttribute("aria-label", label);
  messages.append(message);
  message.scrollIntoView({ block: "end" });
  return message;
}

/** The reply to fill: busy (screen readers wait for it to be complete) with a status line. */
function addReply(label, status) {
  const reply = addMessage("assistant", label);
  reply.id = `reply-${++replies}`;
  reply.setAttribute("aria-busy", "true");
  reply.append(element("p", "status", status));
  return reply;
}

function problemFrom(error) {
  if (error.problem) return error.problem;
  const title = error instanceof TypeError ? "Cannot reach the service" : "Error";
  return { title, detail: error.message };
}

function showProblem(reply, problem) {
  reply.classList.add("error");
  reply.replaceChildren(element("h3", null, problem.title), element("p", null, problem.detail));
}

function showNothingFound(reply, text) {
  reply.classList.add("nothing-found");
  reply.replaceChildren(element("h3", null, "Nothing found"), element("p", "answer-text", text));
}

// "[1]" or "[1, 3]": the numbers of the sources a sentence comes from.
const MARKERS = /\[(\d+(?:\s*,\s*\d+)*)\]/g;

/** The answer's text with each [n] a link to the card of source n. */
function answerText(text, cardIds) {
  const paragraph = element("p", "answer-text");
  let done = 0;
  for (const match of text.matchAll(MARKERS)) {
    paragraph.append(text.slice(done, match.index), "[");
    match[1].split(",").forEach((raw, i) => {
      const number = raw.trim();
      if (i) paragraph.append(", ");
      const id = cardIds.get(Number(number));
      if (!id) {
        paragraph.append(number);
        return;
      }
      const link = element("a", "marker", number);
      link.href = `#${id}`;
      link.setAttribute("aria-label", `source ${number}`);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        const target = $(id);
        target.querySelector("button").focus(); // scrolls to it; Enter then opens it
        target.classList.remove("flash"); // a second click replays the highlight
        requestAnimationFrame(() => target.classList.add("flash"));
      });
      paragraph.append(link);
    });
    paragraph.append("]");
    done = match.index + match[0].length;
  }
  paragraph.append(text.slice(done));
  return paragraph;
}

const NOTES = {
  no_answer: "The sources found do not answer this.",
  ungrounded: "This answer cites none of the sources given to the model: do not rely on it.",
};

function showAnswer(reply, answer) {
  if (answer.status === "nothing_found") {
    showNothingFound(reply, answer.answer);
    return;
  }
  const cardIds = new Map();
  for (const { number } of answer.citations) cardIds.set(number, `${reply.id}-source-${number}`);
  reply.replaceChildren(answerText(answer.answer, cardIds));
  if (NOTES[answer.status]) reply.append(element("p", "note", NOTES[answer.status]));
  if (answer.citations.length) {
    const list = element("ol", "cards");
    list.setAttribute("aria-label", "Sources");
    for (const citation of answer.citations) {
      const id = cardIds.get(citation.number);
      list.append(card(citation, { number: citation.number, id, open: openViewer }));
    }
    reply.append(list);
  }
  const by = `${answer.provider} (${answer.model}), collection ${answer.collection}`;
  reply.append(element("p", "meta", `Answered by ${by}`));
}

// -- asking in words: /v1/chat, streamed --------------------------------------------------------

async function ask(text) {
  const { modalities, tags, collection } = scope();
  const turn = { role: "user", content: text };
  addMessage("user", "You asked").append(element("p", "user-text", text));
  const reply = addReply("Answer", "Searching the library…");
  const live = element("p", "answer-text");
  reply.append(live);
  const body = {
    messages: [...conversation, turn].slice(-SENT_MESSAGES),
    stream: true,
    filters: { modalities, tags },
  };
  if (collection) body.collection = collection;
  try {
    const response = await apiFetch("/v1/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    let ended = false;
    for await (const { event, data } of readEvents(response)) {
      if (event === "hits") {
        const found = data.hits.filter((hit) => hit.relevant).length;
        reply.querySelector(".status").textContent = found
          ? `Found ${found} relevant source${found === 1 ? "" : "s"}; answering…`
          : "Nothing relevant found…";
      } else if (event === "delta") {
        live.textContent += data.text;
      } else if (event === "answer") {
        showAnswer(reply, data);
        conversation.push(turn, { role: "assistant", content: data.answer });
        ended = true;
      } else if (event === "error") {
        showProblem(reply, data);
        ended = true;
      }
    }
    if (!ended) throw new Error("The answer stopped before it was complete.");
  } catch (error) {
    showProblem(reply, problemFrom(error));
  } finally {
    reply.removeAttribute("aria-busy");
    reply.scrollIntoView({ block: "nearest" });
  }
}

// -- asking with a picture: /v1/search, multipart ----------------------------------------------

async function searchPicture(file) {
  const mine = addMessage("user", "You searched with a picture");
  mine.append(element("p", "user-text", `Pictures like ${file.name}:`));
  const reply = addReply("Similar pictures", "Searching the library…");
  if (!file.type.startsWith("image/")) {
    showProblem(reply, { title: "Not a picture", detail: `${file.name} is not an image file.` });
    reply.removeAttribute("aria-busy");
    return;
  }
  const preview = element("img", "query-picture");
  preview.alt = `Your picture: ${file.name}`;
  preview.src = URL.createObjectURL(file);
  preview.addEventListener("load", () => URL.revokeObjectURL(preview.src), { once: true });
  mine.append(preview);
  const { modalities, tags, collection } = scope();
  const form = new FormData();
  form.append("image", file, file.name);
  for (const modality of modalities) form.append("modalities", modality);
  for (const tag of tags) form.append("tags", tag);
  if (collection) form.append("collection", collection);
  try {
    const result = await (await apiFetch("/v1/search", { method: "POST", body: form })).json();
    const similar = result.hits.filter((hit) => hit.relevant);
    if (!similar.length) {
      showNothingFound(reply, "No picture in the library looks like this one.");
      return;
    }
    const list = element("ol", "cards");
    list.setAttribute("aria-label", "Similar pictures");
    for (const hit of similar) list.append(card(hit, { open: openViewer }));
    const count = `${similar.length} similar picture${similar.length === 1 ? "" : "s"}`;
    reply.replaceChildren(element("h3", null, count), list);
  } catch (error) {
    showProblem(reply, problemFrom(error));
  } finally {
    reply.removeAttribute("aria-busy");
  }
}

/** Runs one question or search at a time; the question box keeps the focus. */
async function run(task) {
  if (busy) return;
  busy = true;
  $("send").disabled = true;
  try {
    await task();
  } finally {
    busy = false;
    $("send").disabled = false;
    question.focus();
  }
}

$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = question.value.trim();
  if (!text || busy) return;
  question.value = "";
  run(() => ask(text));
});

question.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter starts a new line; an input method composing text keeps Enter.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("ask-form").requestSubmit();
  }
});

$("pick-image").addEventListener("click", () => $("image-input").click());
$("image-input").addEventListener("change", (event) => {
  const [file] = event.target.files;
  event.target.value = ""; // the same picture may be chosen again
  if (file) run(() => searchPicture(file));
});

$("new-chat").addEventListener("click", () => {
  conversation.length = 0;
  messages.replaceChildren();
  $("intro").hidden = false;
  question.focus();
});

// Dropping a picture anywhere on the conversation searches with it. dragenter and dragleave
// fire for every child crossed, so a depth count says when the pointer really left.
const chat = $("chat");
let dragDepth = 0;
const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");

chat.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  chat.classList.add("dragging");
});
chat.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault(); // makes this a drop target
  event.dataTransfer.dropEffect = "copy";
});
chat.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) chat.classList.remove("dragging");
});
chat.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  chat.classList.remove("dragging");
  const [file] = event.dataTransfer.files;
  if (file) run(() => searchPicture(file));
});
// A file dropped beside the drop area must not replace the page with the file.
window.addEventListener("dragover", (event) => carriesFiles(event) && event.preventDefault());
window.addEventListener("drop", (event) => carriesFiles(event) && event.preventDefault());

// -- the API key --------------------------------------------------------------------------------

const keyDialog = $("key-dialog");
let keyAsked = null; // the prompt on screen: requests refused meanwhile wait for the same key
let settleKey = null;

function askForKey(problem) {
  if (!keyAsked) {
    keyAsked = new Promise((resolve) => (settleKey = resolve)).finally(() => (keyAsked = null));
    $("key-reason").textContent = apiKey()
      ? `The service refused the key: ${problem.detail}.`
      : `The service says: ${problem.detail}.`;
    $("key-input").value = "";
    keyDialog.showModal();
    $("key-input").focus();
  }
  return keyAsked;
}

function settle(key) {
  const resolve = settleKey;
  settleKey = null;
  if (keyDialog.open) keyDialog.close();
  if (key) keyChanged();
  resolve?.(key);
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  setApiKey(key);
  settle(key);
});
$("key-cancel").addEventListener("click", () => settle(null));
// Escape: the browser closes the dialog; the person gave up.
keyDialog.addEventListener("cancel", () => settle(null));

$("forget-key").addEventListener("click", () => {
  forgetApiKey();
  $("forget-key").hidden = $("upload").hidden = true;
  limits = null; // the next request refused asks for a key again
});

function keyChanged() {
  $("forget-key").hidden = !apiKey();
  loadLibrary();
}

whenKeyNeeded(askForKey);

// -- the library: collections, uploads ----------------------------------------------------------

let limits = null;

/** Collections for the filter, and the upload form when this page may write (a key it has, or
 * none needed): whatever the service lets this page read, it shows. */
async function loadLibrary() {
  try {
    const [models, uploadLimits] = await Promise.all([
      getJson("/v1/models"),
      getJson("/v1/ingest/limits"),
    ]);
    const names = models.data.map((m) => m.id.split(":")[1]).filter(Boolean);
    $("collections").replaceChildren(
      ...names.map((name) => Object.assign(document.createElement("option"), { value: name })),
    );
    limits = uploadLimits;
    const megabytes = Math.floor(limits.max_bytes / 2 ** 20);
    $("upload-limits").textContent = `Up to ${limits.max_files} files, ${megabytes} MiB in all.`;
    $("upload").hidden = false;
  } catch {
    limits = null; // refused (no key given): nothing to upload with
    $("upload").hidden = true;
  }
}

const FINISHED = new Set(["succeeded", "failed", "interrupted"]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showJob(job) {
  const progress = $("upload-progress");
  const status = $("upload-status");
  progress.hidden = false;
  if (job.files_total == null) {
    progress.removeAttribute("value"); // still planning: an indeterminate bar
  } else {
    progress.max = Math.max(job.files_total, 1);
    progress.value = job.files_total ? job.files_done : 1;
  }
  if (job.status === "queued") {
    status.textContent = "Waiting for the service to start the job…";
  } else if (job.status === "running" && job.files_total == null) {
    status.textContent = "Looking at the files…";
  } else if (job.status === "running" && job.files_done < job.files_total) {
    const at = job.current_file ? `: ${job.current_file}` : "";
    status.textContent = `Reading file ${job.files_done + 1} of ${job.files_total}${at}`;
  } else if (job.status === "running") {
    status.textContent = `All ${job.files_total} files read; finishing the index…`;
  } else if (job.status === "succeeded") {
    const counts = Object.entries(job.counts).map(([outcome, n]) => `${n} ${outcome}`);
    const failed = job.results.filter((r) => r.outcome === "failed");
    const why = failed.map((r) => `${r.path}: ${r.reason}`).join("; ");
    status.textContent = `Done: ${counts.join(", ") || "nothing to do"}.${why ? ` ${why}` : ""}`;
  } else if (job.status === "failed") {
    status.textContent = `The job could not run: ${job.error}`;
  } else {
    status.textContent = "The service stopped during the job; it resumes when it starts again.";
  }
}

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const files = [...$("upload-files").files];
  const bytes = files.reduce((sum, file) => sum + file.size, 0);
  const status = $("upload-status");
  if (!limits || !files.length) return;
  if (files.length > limits.max_files || bytes > limits.max_bytes) {
    status.textContent = `Too much for one upload: ${$("upload-limits").textContent}`;
    return;
  }
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const tags = $("upload-tags").value.trim();
  if (tags) form.append("tags", tags);
  const { collection } = scope();
  if (collection) form.append("collection", collection);
  const submit = event.target.querySelector("button[type=submit]");
  submit.disabled = true;
  status.textContent = `Uploading ${files.length} file${files.length === 1 ? "" : "s"}…`;
  try {
    let job = await (await apiFetch("/v1/ingest", { method: "POST", body: form })).json();
    while (!FINISHED.has(job.status)) {
      showJob(job);
      await sleep(500);
      job = await getJson(job.links.self);
    }
    showJob(job);
    event.target.reset();
    loadLibrary(); // a new collection shows in the filter
  } catch (error) {
    const problem = problemFrom(error);
    status.textContent = `${problem.title}: ${problem.detail}`;
  } finally {
    submit.disabled = false;
  }
});

// -- start ----------------------------------------------------------------------------------------

// On a phone the panels start folded: the conversation gets the screen.
if (matchMedia("(max-width: 720px)").matches) $("filters").open = $("upload").open = false;
$("forget-key").hidden = !apiKey();
loadLibrary();
question.focus();
