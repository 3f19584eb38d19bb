// Messages sent but not yet acknowledged by `message.created`, kept in
// sessionStorage so a reload or a reconnect resends them with the same client_id
// (the server stores each client_id once: protocol guarantee 4).
const KEY = "chat.outbox";

export class Outbox {
  constructor() {
    this.entries = this.read();
  }

  read() {
    try {
      const value = JSON.parse(sessionStorage.getItem(KEY) || "[]");
      return Array.isArray(value) ? value : [];
    } catch (_e) {
      return [];
    }
  }

  write() {
    try {
      sessionStorage.setItem(KEY, JSON.stringify(this.entries));
    } catch (_e) {
      /* storage full or off: the in-memory queue still works */
    }
  }

  add(frame) {
    this.entries.push(frame);
    this.write();
  }

  get(clientId) {
    return this.entries.find((e) => e.client_id === clientId);
  }

  remove(clientId) {
    const entry = this.get(clientId);
    if (!entry) return null;
    this.entries = this.entries.filter((e) => e.client_id !== clientId);
    this.write();
    return entry;
  }

  forDialogue(dialogueId) {
    return this.entries.filter((e) => String(e.dialogue) === String(dialogueId));
  }
}

export function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
