// The page over unimm's JSON API: read an image (uploaded or drawn), generate images, show the model.
"use strict";

const $ = (id) => document.getElementById(id);
let upload = null; // the uploaded file as a data: URL, sent as it is until the canvas is drawn on

function post(path, body) {
  return fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

// "400: image is larger than ..." from the API's {"error": {"message": ...}} (or the raw body)
async function failure(response) {
  const text = await response.text();
  try {
    return `${response.status}: ${JSON.parse(text).error.message}`;
  } catch {
    return `${response.status}: ${text || response.statusText}`;
  }
}

function showError(id, message) {
  $(id).textContent = message;
  $(id).hidden = !message;
}

// ---------------------------------------------------------------- the model
async function showModel() {
  const response = await fetch("/v1/models");
  if (!response.ok) return showError("model-error", await failure(response));
  const card = (await response.json()).data[0];
  const p = card.parameters, t = card.training;
  const rows = {
    strategy: Object.entries(card.strategy).filter(([, kind]) => kind).map(([part, kind]) => `${part} ${kind}`).join(", "),
    parameters: `${p.total.toLocaleString()} (backbone ${p.backbone.toLocaleString()}, writer ${p.writer.toLocaleString()}, reader ${p.reader.toLocaleString()})`,
    training: `${t.steps_done ?? "?"} of ${t.steps} steps, batch ${t.batch_size}`,
    images: `${card.image_size} × ${card.image_size}`,
  };
  $("model-name").textContent = card.id;
  $("model-info").replaceChildren(...Object.entries(rows).flatMap(([name, value]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    return [dt, dd];
  }));
  $("steps").placeholder = card.sampling.steps;
  $("guidance").placeholder = card.sampling.guidance;
}

// ---------------------------------------------------------------- the canvas
const canvas = $("canvas");
const pen = canvas.getContext("2d");

function clearCanvas() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, canvas.width, canvas.height);
  setUpload(null, "blank");
}

function setUpload(url, source) {
  upload = url;
  canvas.dataset.source = source; // "blank", "drawing" or "upload": what "Read the image" sends
}

function at(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
}

canvas.addEventListener("pointerdown", (event) => {
  setUpload(null, "drawing");
  canvas.setPointerCapture(event.pointerId);
  pen.strokeStyle = "#fff";
  pen.lineWidth = 22;
  pen.lineCap = pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(...at(event));
  pen.lineTo(...at(event));
  pen.stroke();
});
canvas.addEventListener("pointermove", (event) => {
  if (!canvas.hasPointerCapture(event.pointerId)) return;
  pen.lineTo(...at(event));
  pen.stroke();
});

$("image-file").addEventListener("change", () => {
  const file = $("image-file").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const image = new Image();
    image.onload = () => {
      clearCanvas();
      pen.imageSmoothingEnabled = false;
      pen.drawImage(image, 0, 0, canvas.width, canvas.height);
      setUpload(reader.result, "upload");
    };
    image.onerror = () => showError("caption-error", "the chosen file is not an image this browser can show");
    image.src = reader.result;
  };
  reader.readAsDataURL(file);
});
$("clear").addEventListener("click", () => {
  clearCanvas();
  $("image-file").value = "";
});

// ---------------------------------------------------------------- image -> text
// Calls onEvent with each parsed "data: {...}" event of a server-sent event stream, until "[DONE]".
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      if (!event.startsWith("data: ")) continue;
      if (event === "data: [DONE]") return;
      onEvent(JSON.parse(event.slice(6)));
    }
  }
}

async function read(event) {
  event.preventDefault();
  const out = $("caption"), stream = $("stream").checked;
  const content = [{ type: "image_url", image_url: { url: upload ?? canvas.toDataURL("image/png") } }];
  const question = $("question").value.trim();
  if (question) content.push({ type: "text", text: question });
  out.textContent = "";
  out.dataset.state = "running";
  showError("caption-error", "");
  $("read").disabled = true;
  try {
    const response = await post("/v1/chat/completions", { messages: [{ role: "user", content }], stream });
    if (!response.ok) throw new Error(await failure(response));
    if (!stream) {
      out.textContent = (await response.json()).choices[0].message.content;
    } else {
      await readEvents(response, (chunk) => {
        if (chunk.error) throw new Error(chunk.error.message);
        out.textContent += chunk.choices[0].delta.content ?? "";
      });
    }
    out.dataset.state = "done";
  } catch (err) {
    out.dataset.state = "error";
    showError("caption-error", err.message);
  } finally {
    $("read").disabled = false;
  }
}

// ---------------------------------------------------------------- text -> image
async function write(event) {
  event.preventDefault();
  const grid = $("grid"), prompt = $("prompt").value;
  const body = { prompt, n: Number($("n").value || 1) };
  for (const field of ["seed", "steps", "guidance"]) {
    if ($(field).value !== "") body[field] = Number($(field).value);
  }
  grid.dataset.state = "running";
  showError("generate-error", "");
  $("write").disabled = true;
  try {
    const response = await post("/v1/images/generations", body);
    if (!response.ok) throw new Error(await failure(response));
    grid.replaceChildren(...(await response.json()).data.map((item, i) => {
      const image = document.createElement("img");
      image.src = `data:image/png;base64,${item.b64_json}`;
      image.alt = `${prompt} (${i + 1})`;
      return image;
    }));
    grid.dataset.state = "done";
  } catch (err) {
    grid.dataset.state = "error";
    showError("generate-error", err.message);
  } finally {
    $("write").disabled = false;
  }
}

$("read-form").addEventListener("submit", read);
$("write-form").addEventListener("submit", write);
clearCanvas();
showModel().catch((err) => showError("model-error", err.message));
