// An object's page: the clip starts at the object's second, muted, playing.
(function () {
  const video = document.getElementById("clip");
  if (!video) return;
  const offset = parseFloat(video.dataset.offset) || 0;
  const start = function () {
    if (Math.abs(video.currentTime - offset) > 0.25) video.currentTime = offset;
    video.play().catch(function () {});  // a browser that refuses autoplay leaves the controls
  };
  if (video.readyState >= 1) start();
  else video.addEventListener("loadedmetadata", start, { once: true });
})();
