// The Image to Text page: images waiting to be sent, presets, and the live job cards.
// Cards arrive as HTML (with the page, then over the WebSocket); this file never builds one.
(function () {
  "use strict";

  // --- images waiting to be sent ---------------------------------------------

  // Each item is {file, path, thumb} for a new file (path: its place in a folder) or
  // {again, thumb} for a stored one run again. Several files, a folder or a ZIP make a batch.
  const pending = [];

  function isZip(file) {
    return /\.zip$/i.test(file.name) || /zip/.test(file.type);
  }

  // Django keeps only a file name's last part, so each file's folder path goes in "paths" beside it.
  function syncFileInput(form) {
    const transfer = new DataTransfer();
    form.querySelectorAll("input[name=paths]").forEach((input) => input.remove());
    pending.filter((item) => item.file).forEach((item) => {
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
    } else {
      Object.assign(img, { className: "pending-zip", textContent: "ZIP" });
    }
    const name = document.createElement("span");
    name.className = "pending-name";
    name.textContent = item.file ? item.path : `Request ${item.again}, again`;
    const remove = document.createElement("button");
    Object.assign(remove, { type: "button", className: "button button--quiet", textContent: "Remove" });
    remove.setAttribute("aria-label", `Remove ${name.textContent}`);
    remove.addEventListener("click", () => {
      const [gone] = pending.splice(index, 1);
      if (gone.file && gone.thumb) URL.revokeObjectURL(gone.thumb);
      renderPending(form);
      form.querySelector("#images").focus();
    });
    li.append(img, name, remove);
    return li;
  }

  // files: File objects, or [file, path] pairs for files found in a dropped folder.
  function addFiles(form, files) {
    for (const entry of files) {
      const [file, path] = Array.isArray(entry) ? entry : [entry, entry.webkitRelativePath || entry.name];
      pending.push({ file, path, thumb: isZip(file) ? "" : URL.createObjectURL(file) });
    }
    renderPending(form);
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

  function clearPending(form) {
    pending.filter((item) => item.file && item.thumb).forEach((item) => URL.revokeObjectURL(item.thumb));
    pending.length = 0;
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
    const defaultHelp = help.textContent;

    function update() {
      const option = model.selectedOptions[0];
      const task = option ? option.dataset.capability : "vision";
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

  function setUpCompose() {
    const form = document.getElementById("compose");
    if (!form) return;
    setUpDropzone(form);
    setUpPresets(form);
    form.addEventListener("htmx:afterRequest", (event) => {
      if (event.detail.elt === form && event.detail.successful) clearPending(form);
    });
    // "Run again" on a card puts its stored image back in the form.
    document.addEventListener("click", (event) => {
      const button = event.target.closest("[data-again]");
      if (!button) return;
      if (!pending.some((item) => item.again === button.dataset.again)) {
        pending.push({ again: button.dataset.again, thumb: button.dataset.thumb });
        renderPending(form);
      }
      form.scrollIntoView({ behavior: "smooth", block: "start" });
      form.querySelector("#model").focus();
    });
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
