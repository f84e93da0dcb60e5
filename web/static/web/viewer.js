/* Scan viewer: a slider per plane swaps the server-rendered PNG slice. */
(function () {
  "use strict";
  var sliders = document.querySelectorAll("#viewer input[type=range]");
  Array.prototype.forEach.call(sliders, function (slider) {
    var plane = slider.getAttribute("data-plane");
    var img = document.getElementById("img-" + plane);
    var out = document.getElementById("out-" + plane);
    slider.addEventListener("input", function () {
      var index = parseInt(slider.value, 10);
      img.src = img.getAttribute("data-base") + index + ".png";
      img.alt = img.getAttribute("data-label") + " slice " + (index + 1) + " of " + img.getAttribute("data-count");
      out.textContent = String(index + 1);
    });
  });
})();
