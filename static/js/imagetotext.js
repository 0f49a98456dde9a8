// The Image to Text page: images waiting to be sent, presets, and the live job cards.
// Cards arrive as HTML (with the page, then over the WebSocket); this file never builds one.
(function () {
  "use strict";

  // --- images waiting to be sent ---------------------------------------------

  // Each item is {file, path, thumb, problem} for a new file (path: its place in a folder;
  // problem: why the server would refuse it, "" if none) or {again, thumb} for a stored one
  // run again. Several files, a folder or a ZIP make a batch. A file with a problem stays in
  // the list with its reason, and is not sent.
  const pending = [];
  const sendable = (item) => item.again || !item.problem;

  function isZip(file) {
    return /\.zip$/i.test(file.name) || /zip/.test(file.type);
  }

  // The server's limits and accepted types, as the page was given them (imagetotext.page.limits).
  function uploadRules(form) {
    const zone = form.querySelector("#dropzone").dataset;
    return {
      maxBytes: Number(zone.maxBytes),
      maxSize: zone.maxSize,
      batchMaxBytes: Number(zone.batchMaxBytes),
      batchMaxSize: zone.batchMaxSize,
      batchMaxItems: Number(zone.batchMaxItems),
      types: zone.types.split(","),
      extensions: zone.extensions.split(","),
      formats: zone.formats,
    };
  }

  // Sizes as the server's refusals write them: "20 MB", "2.5 MB", "2 GB".
  function readableSize(bytes) {
    const megabyte = 1024 * 1024;
    const [unit, name] = bytes >= 1024 * megabyte ? [1024 * megabyte, "GB"] : [megabyte, "MB"];
    return `${Number((bytes / unit).toPrecision(3))} ${name}`;
  }

  // Why the server would refuse this file, known before it is sent; "" when it would take it.
  function problemWith(file, rules) {
    if (isZip(file)) {
      const big = file.size > rules.batchMaxBytes;
      return big ? `The ZIP is ${readableSize(file.size)}; the limit is ${rules.batchMaxSize}.` : "";
    }
    const ending = (file.name.match(/\.[^./]+$/) || [""])[0].toLowerCase();
    if (!rules.types.includes(file.type) && !rules.extensions.includes(ending)) {
      return `Not an image in an accepted format (${rules.formats}).`;
    }
    if (!file.size) return "The file is empty.";
    if (file.size > rules.maxBytes) return `The image is ${readableSize(file.size)}; the limit is ${rules.maxSize}.`;
    return "";
  }

  // Why the picked files cannot go as they are, or "" to let the send go ahead.
  function sendProblem(rules) {
    const files = pending.filter((item) => item.file && !item.problem);
    if (!files.length && !pending.some((item) => item.again)) {
      return pending.length ? "None of the picked files can be sent: the reason is beside each." : "";
    }
    if (files.length > rules.batchMaxItems) {
      return `${files.length} files are more than one batch takes (${rules.batchMaxItems}): send them in parts.`;
    }
    const total = files.reduce((sum, item) => sum + item.file.size, 0);
    if (files.length > 1 && total > rules.batchMaxBytes) {
      return `The files come to ${readableSize(total)}, more than one batch takes (${rules.batchMaxSize}): send them in parts.`;
    }
    return "";
  }

  // The same list upload_errors.html shows for the server's refusals, next to the drop area.
  function showErrors(messages) {
    const box = document.getElementById("upload-errors");
    if (!messages.length) {
      box.replaceChildren();
      return;
    }
    const list = document.createElement("ul");
    list.append(...messages.map((message) => Object.assign(document.createElement("li"), { textContent: message })));
    box.replaceChildren(Object.assign(document.createElement("p"), { textContent: "Nothing was sent:" }), list);
    box.scrollIntoView({ block: "nearest" });
  }

  // Django keeps only a file name's last part, so each file's folder path goes in "paths" beside it.
  function syncFileInput(form) {
    const transfer = new DataTransfer();
    form.querySelectorAll("input[name=paths]").forEach((input) => input.remove());
    pending.filter((item) => item.file && sendable(item)).forEach((item) => {
      transfer.items.add(item.file);
      const input = document.createElement("input");
      Object.assign(input, { type: "hidden", name: "paths", value: item.path });
      form.appendChild(input);
    });
    form.querySelector("#images").files = transfer.files;
  }

  function renderPending(form) {
    const list = form.querySelector("#pending");
    list.replaceChildren(...pending.map((item, index) => pendingItem(form, item, index)));
    form.querySelectorAll("input[name=again]").forEach((input) => input.remove());
    pending.filter((item) => item.again).forEach((item) => {
      const input = document.createElement("input");
      Object.assign(input, { type: "hidden", name: "again", value: item.again });
      form.appendChild(input);
    });
    syncFileInput(form);
  }

  function pendingItem(form, item, index) {
    const li = document.createElement("li");
    const img = document.createElement(item.thumb ? "img" : "span");
    if (item.thumb) {
      img.src = item.thumb;
      img.alt = item.file ? `Preview of ${item.path}` : `The image of request ${item.again}`;
      // A file the browser cannot draw (TIFF, a broken one) gets the same mark as a ZIP.
      img.addEventListener("error", () => img.replaceWith(
        Object.assign(document.createElement("span"), { className: "pending-zip", textContent: "?" }),
      ));
    } else {
      Object.assign(img, { className: "pending-zip", textContent: isZip(item.file) ? "ZIP" : "?" });
    }
    const name = document.createElement("span");
    name.className = "pending-name";
    name.textContent = item.file ? item.path : `Request ${item.again}, again`;
    name.title = name.textContent;
    const remove = document.createElement("button");
    Object.assign(remove, { type: "button", className: "button button--quiet", textContent: "Remove" });
    remove.setAttribute("aria-label", `Remove ${name.textContent}`);
    remove.addEventListener("click", () => {
      const [gone] = pending.splice(index, 1);
      if (gone.file && gone.thumb) URL.revokeObjectURL(gone.thumb);
      renderPending(form);
      showErrors([]);
      form.querySelector("#images").focus();
    });
    li.append(img, name, remove);
    if (item.problem) {
      li.classList.add("pending--refused");
      const problem = Object.assign(document.createElement("span"), {
        className: "pending-problem",
        id: `pending-problem-${index}`,
        textContent: `Not sent: ${item.problem}`,
      });
      name.setAttribute("aria-describedby", problem.id);
      li.append(problem);
    }
    return li;
  }

  // files: File objects, or [file, path] pairs for files found in a dropped folder.
  function addFiles(form, files) {
    const rules = uploadRules(form);
    for (const entry of files) {
      const [file, path] = Array.isArray(entry) ? entry : [entry, entry.webkitRelativePath || entry.name];
      const problem = problemWith(file, rules);
      // No preview of what is not an image we take: the browser may not draw it either.
      const thumb = isZip(file) || problem ? "" : URL.createObjectURL(file);
      pending.push({ file, path, thumb, problem });
    }
    renderPending(form);
    showErrors([]);
  }

  // A dropped folder arrives as an entry to walk; its files keep their paths inside it.
  async function droppedFiles(transfer) {
    const entries = [...transfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
    if (!entries.some((entry) => entry.isDirectory)) return [...transfer.files];
    const found = [];
    async function walk(entry) {
      if (entry.isFile) {
        const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
        found.push([file, entry.fullPath.replace(/^\//, "")]);
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
          if (!batch.length) break;
          for (const child of batch) await walk(child);
        }
      }
    }
    for (const entry of entries) await walk(entry);
    return found;
  }

  // Only what went: an image pasted while the send was on its way stays for the next one.
  function removeSent(form, sent) {
    sent.filter((item) => item.file && item.thumb).forEach((item) => URL.revokeObjectURL(item.thumb));
    const kept = pending.filter((item) => !sent.includes(item));
    pending.splice(0, pending.length, ...kept);
    renderPending(form);
  }

  function setUpDropzone(form) {
    const input = form.querySelector("#images");
    const zone = form.querySelector("#dropzone");
    input.addEventListener("change", () => {
      const chosen = [...input.files].filter((file) => !pending.some((item) => item.file === file));
      addFiles(form, chosen);
    });
    const folder = form.querySelector("#folder");
    folder?.addEventListener("change", () => {
      addFiles(form, [...folder.files]);
      folder.value = "";  // the files now live in #images; this input sends nothing
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dropzone--over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dropzone--over"));
    zone.addEventListener("drop", async (event) => {
      event.preventDefault();
      zone.classList.remove("dropzone--over");
      addFiles(form, await droppedFiles(event.dataTransfer));
    });
    document.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files || [])].filter((file) => file.type.startsWith("image/"));
      if (files.length) {
        event.preventDefault();
        addFiles(form, files.map((file, i) => renamed(file, i)));
      }
    });
  }

  // Pasted screenshots are all called "image.png"; give them names one can tell apart.
  function renamed(file, index) {
    if (file.name && file.name !== "image.png") return file;
    const stamp = new Date().toISOString().slice(11, 19).replaceAll(":", "");
    const extension = file.type.split("/")[1] || "png";
    return new File([file], `pasted-${stamp}-${index + 1}.${extension}`, { type: file.type });
  }

  // --- model and presets -----------------------------------------------------

  function setUpPresets(form) {
    const model = form.querySelector("#model");
    const prompt = form.querySelector("#prompt");
    const help = form.querySelector("#prompt-help");
    const presets = [...form.querySelectorAll("input[name=preset]")];
    const agents = form.querySelector("#model-agents");
    const defaultHelp = help.textContent;

    function update() {
      const option = model.selectedOptions[0];
      const task = option ? option.dataset.capability : "vision";
      agents.textContent = option?.dataset.agents ? `Runs on ${option.dataset.agents}.` : "";
      presets.forEach((radio) => {
        radio.disabled = task === "ocr" && radio.value !== "text";
      });
      const textPreset = presets.find((radio) => radio.value === "text");
      if (task === "ocr" && textPreset) textPreset.checked = true;
      const chosen = presets.find((radio) => radio.checked) || presets[0];
      prompt.disabled = task !== "vision";
      if (task === "florence2") {
        // The server says which Florence-2 task each preset runs on this model.
        const florence = JSON.parse(option.dataset.presetTasks || "{}")[chosen.value];
        help.textContent = `Florence-2 runs its task "${florence}" for this preset; it takes no prompt.`;
      } else if (task === "ocr") {
        help.textContent = "The local OCR model only extracts text; it takes no prompt.";
      } else {
        help.textContent = defaultHelp;
      }
    }

    presets.forEach((radio) => radio.addEventListener("change", () => {
      prompt.value = radio.dataset.prompt;
      update();
    }));
    model.addEventListener("change", update);
    prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    update();
  }

  // --- run again -------------------------------------------------------------
  // A job's "Run again" (data-again, data-model, data-prompt, data-task, data-tag) puts its
  // stored image back in the form with the model, preset, prompt and tag it was sent with.

  function runAgain(form, job) {
    if (!pending.some((item) => item.again === job.again)) {
      pending.push({ again: job.again, thumb: job.thumb });
      renderPending(form);
    }
    restoreChoices(form, job);
    form.scrollIntoView({ behavior: "smooth", block: "start" });
    form.querySelector("#model").focus();
  }

  function restoreChoices(form, job) {
    const model = form.querySelector("#model");
    const option = [...model.options].find((each) => each.value === job.model);
    if (option) model.value = job.model;  // a model gone offline: the form keeps its own
    const presets = [...form.querySelectorAll("input[name=preset]")];
    const preset = presetOf(model.selectedOptions[0], presets, job);
    // A prompt of one's own matches no preset: none is checked, rather than one it was not sent with.
    presets.forEach((radio) => { radio.checked = radio === preset; });
    const prompt = form.querySelector("#prompt");
    prompt.value = job.prompt || preset?.dataset.prompt || prompt.value;
    form.querySelector("#tag").value = job.tag || "";
    model.dispatchEvent(new Event("change"));  // which presets and prompt this model takes
  }

  // Jobs keep no preset: it is the one whose prompt the job has, or whose Florence-2 task it ran
  // on this model; a job without either was text recognition.
  function presetOf(option, presets, job) {
    if (job.task) {
      const tasks = JSON.parse(option?.dataset.presetTasks || "{}");
      return presets.find((radio) => tasks[radio.value] === job.task)
        || presets.find((radio) => radio.dataset.florenceTask === job.task);
    }
    if (job.prompt) return presets.find((radio) => radio.dataset.prompt === job.prompt);
    return presets.find((radio) => radio.value === "text");
  }

  // Off the compose page (a job's own page, the history), Run again opens it with the job.
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-again]");
    const form = document.getElementById("compose");
    if (!button) return;
    if (form) {
      runAgain(form, button.dataset);
    } else {
      window.location.assign(button.dataset.againUrl);
    }
  });

  function setUpCompose() {
    const form = document.getElementById("compose");
    if (!form) return;
    setUpDropzone(form);
    setUpPresets(form);
    let sent = [];
    form.addEventListener("htmx:beforeRequest", (event) => {
      if (event.detail.elt !== form) return;
      const problem = sendProblem(uploadRules(form));
      if (problem) {
        event.preventDefault();
        showErrors([problem]);
      } else {
        sent = [...pending];
      }
    });
    // A refusal (4xx, its reasons swapped in next to the drop area) keeps the picked files.
    form.addEventListener("htmx:afterRequest", (event) => {
      if (event.detail.elt !== form) return;
      const status = event.detail.xhr ? event.detail.xhr.status : 0;
      if (status >= 200 && status < 300) {
        removeSent(form, sent);
      } else {
        requestAnimationFrame(() => document.getElementById("upload-errors")?.scrollIntoView({ block: "nearest" }));
      }
    });
    const onLoad = document.getElementById("run-again-on-load");
    if (onLoad) {
      runAgain(form, onLoad.dataset);
      history.replaceState(null, "", window.location.pathname);  // a reload does not add it twice
    }
  }

  // --- copy ------------------------------------------------------------------

  // A card that shows only the start of a long text fetches the whole of it (data-copy-url).
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy-from], [data-copy-url]");
    if (!button) return;
    const label = button.textContent;
    try {
      if (button.dataset.copyUrl) {
        await copyFetched(button.dataset.copyUrl);
      } else {
        await copyText(document.getElementById(button.dataset.copyFrom).value);
      }
      button.textContent = "Copied";
    } catch {
      button.textContent = "Could not copy";
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  });

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      copyBySelection(text);
    }
  }

  async function fetchedText(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status}`);
    return response.text();
  }

  async function copyFetched(url) {
    // Handing the clipboard a promise keeps the click's permission while the text loads
    // (Safari insists); where ClipboardItem is missing, fetch first and copy after.
    if (window.ClipboardItem && navigator.clipboard?.write) {
      const blob = fetchedText(url).then((text) => new Blob([text], { type: "text/plain" }));
      try {
        await navigator.clipboard.write([new ClipboardItem({ "text/plain": blob })]);
        return;
      } catch {
        // fall through: copy the text the other way
      }
    }
    await copyText(await fetchedText(url));
  }

  function copyBySelection(text) {
    const area = Object.assign(document.createElement("textarea"), { value: text });
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }

  // --- live cards ------------------------------------------------------------
  // Cards arrive over the WebSocket only: a new one goes on top of #jobs, a changed one
  // replaces the card with its id (htmx does both). Here they are only announced.

  function cardIn(fragment) {
    if (fragment.matches && fragment.matches(".job-card")) return fragment;
    return fragment.querySelector ? fragment.querySelector(".job-card") : null;
  }

  function announce(card) {
    const title = card.querySelector(".job-title")?.textContent.trim();
    const badge = card.querySelector(".badge")?.textContent.trim();
    document.getElementById("announcer").textContent = `${title}: ${badge}`;
  }

  document.addEventListener("htmx:oobBeforeSwap", (event) => {
    const incoming = cardIn(event.detail.fragment);
    const existing = event.detail.target;
    if (incoming && (!existing.matches(".job-card") || incoming.dataset.state !== existing.dataset.state)) {
      announce(incoming);
    }
  });

  function setLiveStatus(state, text) {
    const status = document.getElementById("live-status");
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }
  document.addEventListener("htmx:wsOpen", () => setLiveStatus("open", "live"));
  document.addEventListener("htmx:wsClose", () => setLiveStatus("closed", "reconnecting…"));

  // Running cards count their seconds from data-started between updates.
  function tick() {
    document.querySelectorAll(".elapsed[data-started]").forEach((span) => {
      const started = Date.parse(span.dataset.started);
      if (!Number.isNaN(started)) {
        span.textContent = `${Math.max(0, Math.round((Date.now() - started) / 1000))} s`;
      }
    });
  }
  setInterval(tick, 1000);

  document.addEventListener("DOMContentLoaded", () => {
    setUpCompose();
    tick();
  });
})();
