// msrpscope web view: the session page's "refresh every 2 s" switch.
"use strict";
(function () {
  var box = document.getElementById("refresh");
  if (!box) return;
  var timer = null;
  function arm() {
    if (timer) clearTimeout(timer);
    timer = null;
    if (box.checked) timer = setTimeout(function () { location.reload(); }, 2000);
  }
  box.addEventListener("change", function () {
    var u = new URL(location.href);
    if (box.checked) u.searchParams.set("refresh", "1"); else u.searchParams.delete("refresh");
    history.replaceState(null, "", u);
    arm();
  });
  arm();
})();
