// Thin wrappers over Django's JavaScriptCatalog (/jsi18n/), loaded before the modules.
export function _(text) {
  return typeof window.gettext === "function" ? window.gettext(text) : text;
}

/** Interpolate `%(name)s` into an already translated `text`: fmt(_("..."), {...}). */
export function fmt(text, values) {
  const translated = text;
  return typeof window.interpolate === "function"
    ? window.interpolate(translated, values, true)
    : translated.replace(/%\((\w+)\)s/g, (_m, k) => String(values[k]));
}

export function ngettextFmt(singular, plural, count, values) {
  const text =
    typeof window.ngettext === "function"
      ? window.ngettext(singular, plural, count)
      : count === 1
        ? singular
        : plural;
  return typeof window.interpolate === "function"
    ? window.interpolate(text, values, true)
    : text.replace(/%\((\w+)\)s/g, (_m, k) => String(values[k]));
}

const lang = document.documentElement.lang || undefined;
const timeFormat = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(lang, {
  dateStyle: "medium",
  timeStyle: "short",
});

export function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const today = new Date();
  return d.toDateString() === today.toDateString()
    ? timeFormat.format(d)
    : dateTimeFormat.format(d);
}

export function longTime(iso) {
  return iso ? dateTimeFormat.format(new Date(iso)) : "";
}
