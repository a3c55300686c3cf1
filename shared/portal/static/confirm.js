// A confirmation before an action that sends (replay, re-send): a modal <dialog> that says
// what will happen; resolves true only when the person chose the action itself.
import { h } from "./ui.js";

export function confirmAction(title, details, actionLabel) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "confirm-title", "aria-describedby": "confirm-details" },
      h("h2", { id: "confirm-title" }, title),
      h("div", { id: "confirm-details" }, details),
      h("form", { method: "dialog" },
        h("button", { type: "submit", value: "yes" }, actionLabel),
        h("button", { type: "submit", value: "no", autofocus: true }, "Cancel")));
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
