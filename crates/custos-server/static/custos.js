// Keyboard shortcuts for the review inbox. Everything here is also reachable without it:
// rows are links, and the forms are plain forms.
(function () {
  "use strict";
  let pendingG = false;

  function typing(event) {
    const t = event.target;
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }

  function rows() {
    return Array.from(document.querySelectorAll("tr.row[data-href]"));
  }

  function move(step) {
    const all = rows();
    if (all.length === 0) return;
    let index = all.findIndex((r) => r.classList.contains("selected"));
    if (index >= 0) all[index].classList.remove("selected");
    index = Math.min(all.length - 1, Math.max(0, index + step));
    all[index].classList.add("selected");
    all[index].scrollIntoView({ block: "nearest" });
  }

  function open() {
    const row = document.querySelector("tr.row.selected") || rows()[0];
    if (row) window.location.href = row.dataset.href;
  }

  function focus(id) {
    const field = document.getElementById(id);
    if (field) { field.focus(); return true; }
    return false;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (pendingG) {
      pendingG = false;
      if (event.key === "i") { window.location.href = "/ui/approvals"; }
      else if (event.key === "n") { window.location.href = "/ui/nhis"; }
      return;
    }
    switch (event.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "o": case "Enter": open(); break;
      case "a": if (!focus("approve-reason")) return; break;
      case "d": if (!focus("deny-reason")) return; break;
      case "n": if (!focus("approve-scope")) return; break;
      case "/": if (!focus("filter-q") && !focus("filter-state")) return; break;
      case "g": pendingG = true; break;
      default: return;
    }
    event.preventDefault();
  });

  // Rows open on a click anywhere in them, not only on the link.
  document.addEventListener("click", function (event) {
    const row = event.target.closest && event.target.closest("tr.row[data-href]");
    if (row && !event.target.closest("a, button, input, select, textarea")) {
      window.location.href = row.dataset.href;
    }
  });
})();
