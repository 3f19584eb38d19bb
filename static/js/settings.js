// The settings panel: model and system prompt of the open dialogue, presets, the
// context gauge and the user's usage against the daily quota.
import { api } from "./api.js";
import { _, fmt, longTime } from "./i18n.js";

export class SettingsPanel {
  constructor({ getDialogue, onSaved, onCreate, onError }) {
    this.getDialogue = getDialogue; // () => dialogue dict or null (new dialogue)
    this.onSaved = onSaved;
    this.onCreate = onCreate;
    this.onError = onError;
    this.panel = document.getElementById("settings");
    this.model = document.getElementById("settings-model");
    this.system = document.getElementById("settings-system");
    this.presetSelect = document.getElementById("preset-select");
    this.presets = [];
    this.models = null;
    this.draft = { model: "", system_prompt: "" }; // settings of a dialogue not yet created
    this.panel.addEventListener("show.bs.offcanvas", () => this.refresh());
    document.getElementById("settings-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    document.getElementById("preset-apply").addEventListener("click", () => this.applyPreset());
    document.getElementById("preset-save-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.savePreset();
    });
  }

  /** The model a new dialogue's first message should ask for, if chosen. */
  draftModel() {
    return this.draft.model || undefined;
  }

  async loadModels() {
    if (this.models) return this.models;
    this.models = await api("GET", "/api/models/");
    this.model.replaceChildren();
    for (const m of this.models.models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.context_tokens ? `${m.name} (${m.context_tokens.toLocaleString()})` : m.name;
      this.model.appendChild(option);
    }
    document.getElementById("settings-demo").classList.toggle("d-none", !this.models.demo);
    return this.models;
  }

  async refresh() {
    document.getElementById("settings-saved").classList.add("d-none");
    const dialogue = this.getDialogue();
    const source = dialogue || this.draft;
    this.system.value = source.system_prompt || "";
    for (const link of ["export-md", "export-json"]) {
      const a = document.getElementById(link);
      a.classList.toggle("disabled", !dialogue);
      a.setAttribute("aria-disabled", dialogue ? "false" : "true");
      a.href = dialogue ? `/api/dialogues/${dialogue.id}/${link === "export-md" ? "export.md" : "export.json"}` : "#";
    }
    const tasks = [
      this.loadModels().then((models) => {
        this.model.value = source.model || models.default;
      }),
      this.loadPresets(),
      this.loadUsage(),
      dialogue ? this.loadContext(dialogue.id) : Promise.resolve(this.clearContext()),
    ];
    for (const result of await Promise.allSettled(tasks)) {
      if (result.status === "rejected") this.onError(result.reason);
    }
  }

  async save() {
    const values = { model: this.model.value, system_prompt: this.system.value };
    const dialogue = this.getDialogue();
    try {
      if (dialogue) {
        this.onSaved(await api("PATCH", `/api/dialogues/${dialogue.id}/`, values));
      } else {
        this.draft = values;
        if (values.system_prompt.trim()) {
          // A system prompt needs a dialogue to live in: make it now.
          this.onCreate(await api("POST", "/api/dialogues/", values));
          this.draft = { model: "", system_prompt: "" };
        }
      }
      document.getElementById("settings-saved").classList.remove("d-none");
    } catch (err) {
      this.onError(err);
    }
  }

  async loadPresets() {
    const data = await api("GET", "/api/presets/");
    this.presets = Array.isArray(data) ? data : data.results || [];
    const keep = this.presetSelect.value;
    this.presetSelect.replaceChildren(this.presetSelect.options[0] || document.createElement("option"));
    for (const preset of this.presets) {
      const option = document.createElement("option");
      option.value = String(preset.id);
      option.textContent = preset.name;
      this.presetSelect.appendChild(option);
    }
    this.presetSelect.value = keep;
  }

  applyPreset() {
    const preset = this.presets.find((p) => String(p.id) === this.presetSelect.value);
    if (!preset) return;
    this.system.value = preset.system_prompt || "";
    if (preset.model && [...this.model.options].some((o) => o.value === preset.model)) {
      this.model.value = preset.model;
    }
    this.save();
  }

  async savePreset() {
    const name = document.getElementById("preset-name");
    if (!name.value.trim()) return;
    try {
      await api("POST", "/api/presets/", {
        name: name.value.trim(),
        system_prompt: this.system.value,
        model: this.model.value,
      });
      name.value = "";
      await this.loadPresets();
    } catch (err) {
      this.onError(err);
    }
  }

  clearContext() {
    this.setGauge(0);
    document.getElementById("context-label").textContent = _(
      "Send a message to see how much of the context window this dialogue uses.",
    );
  }

  async loadContext(id) {
    const report = await api("GET", `/api/dialogues/${id}/context/`);
    const percent = report.budget_tokens ? Math.min(100, Math.round((100 * report.used_tokens) / report.budget_tokens)) : 0;
    this.setGauge(percent);
    let text = fmt(_("%(used)s of %(budget)s tokens (%(percent)s%). %(included)s of %(total)s messages included."), {
      used: report.used_tokens.toLocaleString(),
      budget: report.budget_tokens.toLocaleString(),
      percent,
      included: report.included_messages,
      total: report.total_messages,
    });
    if (report.summary_used) text += ` ${_("Older messages are summarised.")}`;
    document.getElementById("context-label").textContent = text;
  }

  setGauge(percent) {
    const progress = document.getElementById("context-progress");
    progress.setAttribute("aria-valuenow", String(percent));
    setWidth(document.getElementById("context-bar"), percent);
    document.getElementById("context-bar").classList.toggle("bg-warning", percent >= 80);
  }

  async loadUsage() {
    const usage = await api("GET", "/api/usage/");
    const today = usage.today;
    const quota = usage.quota || {};
    const tokens = (today.prompt_tokens || 0) + (today.completion_tokens || 0);
    document.getElementById("usage-messages").textContent = quota.daily_messages
      ? `${today.messages} / ${quota.daily_messages}`
      : String(today.messages);
    document.getElementById("usage-tokens").textContent = quota.daily_tokens
      ? `${tokens.toLocaleString()} / ${quota.daily_tokens.toLocaleString()}`
      : tokens.toLocaleString();
    document.getElementById("usage-images").textContent = String(today.images || 0);
    document.getElementById("usage-reset").textContent = longTime(usage.reset_at);
    const progress = document.getElementById("quota-progress");
    progress.classList.toggle("d-none", !quota.daily_tokens);
    if (quota.daily_tokens) {
      const percent = Math.min(100, Math.round((100 * tokens) / quota.daily_tokens));
      progress.setAttribute("aria-valuenow", String(percent));
      setWidth(document.getElementById("quota-bar"), percent);
    }
  }
}

/** Widths in 5% steps through classes: style="" attributes are blocked by the CSP. */
export function setWidth(el, percent) {
  for (const c of [...el.classList]) if (c.startsWith("w-p")) el.classList.remove(c);
  el.classList.remove("w-0");
  el.classList.add(`w-p${Math.round(percent / 5) * 5}`);
}
