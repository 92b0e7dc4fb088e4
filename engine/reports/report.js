// plotly figures keep their screen size: before printing, redraw them at the page's width (A4 less margins),
// their height scaled alike but not below 300 px, and restore them after (html.py sets __PRINT_WIDTH__)
(function () {
  function plots() { return Array.from(document.querySelectorAll(".js-plotly-plot")); }
  window.addEventListener("beforeprint", function () {
    plots().forEach(function (p) {
      var height = p.layout.height || p.getBoundingClientRect().height;
      var scale = __PRINT_WIDTH__ / p.getBoundingClientRect().width;
      var printed = Math.min(height, Math.max(300, Math.round(height * scale)));
      p.dataset.screenHeight = height;
      p.style.height = printed + "px";
      Plotly.relayout(p, {width: __PRINT_WIDTH__, height: printed});
    });
  });
  window.addEventListener("afterprint", function () {
    plots().forEach(function (p) {
      p.style.height = "100%";
      Plotly.relayout(p, {width: null, height: Number(p.dataset.screenHeight), autosize: true});
    });
  });
})();
