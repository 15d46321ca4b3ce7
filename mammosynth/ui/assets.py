"""CSS and the page script (keyboard shortcuts, zoom and window/level of the study viewer)."""

from __future__ import annotations

__all__ = ["CSS", "HEAD"]

CSS = """
#case-image img { width: 100%; height: 100%; object-fit: contain; transition: none; cursor: grab; }
#case-image { overflow: hidden; background: #000; }
#case-image .image-container, #case-image .image-frame { overflow: hidden; }
.ms-viewer-tools { display: flex; gap: 0.6rem; align-items: center; flex-wrap: wrap; font-size: 0.85rem; }
.ms-viewer-tools button { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 0 0.6rem;
  min-width: 2rem; background: var(--button-secondary-background-fill); }
.ms-viewer-tools input[type=range] { width: 8rem; vertical-align: middle; }
.ms-hint { opacity: 0.6; }
.ms-study-status { font-size: 1.1rem; }
.ms-progress { height: 6px; background: var(--border-color-primary); border-radius: 3px; margin-top: 0.4rem; }
.ms-progress > div { height: 6px; background: var(--color-accent); border-radius: 3px; }
.ms-saved { color: #2e9e4f; font-size: 0.9rem; margin-left: 0.5rem; }
#answer label, #confidence label, #confidence-slider label { font-size: 1.05rem; }
#gen-validity p { margin: 0; }
/* the verdict table: one line per header cell and per seed (10 digits), the table as wide as its text */
#gen-verdicts table { width: auto; max-width: 100%; }
#gen-verdicts th, #gen-verdicts td:nth-child(-n+4) { white-space: nowrap; }
/* generated images: portrait cells (a mammogram is taller than wide) at least 240 px wide, one column
   when the panel is narrow, instead of Gradio's square cells in a fixed grid */
#gen-gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(240px, 1fr));
  grid-template-rows: none; grid-auto-rows: auto; }
#gen-gallery .thumbnail-item { aspect-ratio: 3 / 4; height: auto; }
#gen-box.box-invalid textarea, #gen-box.box-invalid input { border: 2px solid #c2410c; background: #fff7ed; }
#study-notice p { margin: 0; color: #c2410c; }
#model-banner p { margin: 0; }
.preset { flex-grow: 0 !important; }
"""

HEAD = """
<script>
(() => {
  const view = { zoom: 1, x: 0, y: 0, centre: 50, width: 100, src: null };
  const image = () => document.querySelector('#case-image img');
  const visible = (el) => !!el && el.offsetParent !== null;
  function apply() {
    const el = image();
    if (!el) return;
    el.style.transformOrigin = 'center center';
    el.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
    const low = (view.centre - view.width / 2) / 100, w = Math.max(view.width / 100, 0.01);
    document.querySelectorAll('#ms-wl-filter feFuncR, #ms-wl-filter feFuncG, #ms-wl-filter feFuncB').forEach((f) => {
      f.setAttribute('slope', String(1 / w));
      f.setAttribute('intercept', String(-low / w));
    });
    el.style.filter = (view.centre === 50 && view.width === 100) ? '' : 'url(#ms-wl-filter)';
  }
  function reset() {
    Object.assign(view, { zoom: 1, x: 0, y: 0, centre: 50, width: 100 });
    const c = document.getElementById('ms-wl-centre'), w = document.getElementById('ms-wl-width');
    if (c) c.value = 50; if (w) w.value = 100;
    apply();
  }
  function zoom(factor) { view.zoom = Math.min(Math.max(view.zoom * factor, 1), 8); if (view.zoom === 1) { view.x = 0; view.y = 0; } apply(); }
  function choose(elemId, value) {
    const input = document.querySelector(`#${elemId} input[type=radio][value="${value}"]`);
    if (input) { input.click(); return true; }
    const labels = [...document.querySelectorAll(`#${elemId} label`)];
    const match = labels.find((l) => l.textContent.trim().toLowerCase().startsWith(String(value).toLowerCase()));
    if (match) { match.click(); return true; }
    return false;
  }
  // The 0–100 confidence slider (shown instead of the 1–5 buttons when the study uses that scale):
  // keys 1–5 set its ends and quarters, arrows nudge it. An untouched slider is no answer, so the
  // page remembers whether a person set it for the case on screen (any input in the slider; a new
  // case image clears it) and Submit's js step reads that mark and the value from the page itself:
  // Gradio's copy of the value may lag a key press that came just before Enter.
  let confidenceGiven = false;
  window.msConfidence = (value, given) => {
    const el = slider();
    return el ? [parseFloat(el.value), confidenceGiven] : [value, given];
  };
  function slider() {
    const host = document.getElementById('confidence-slider');
    return visible(host) ? host.querySelector('input[type=range]') : null;
  }
  function setSlider(el, value) {
    const low = parseFloat(el.min), high = parseFloat(el.max);
    el.value = String(Math.min(Math.max(value, low), high));
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }
  function confidenceKey(key) {
    const el = slider();
    if (!el) return choose('confidence', key);
    const low = parseFloat(el.min), high = parseFloat(el.max);
    setSlider(el, Math.round(low + (parseInt(key, 10) - 1) * (high - low) / 4));
    return true;
  }
  function nudge(t, sign) {
    const el = slider();
    if (!el || t === el) return false;  // a focused slider moves by itself
    const low = parseFloat(el.min), high = parseFloat(el.max);
    setSlider(el, parseFloat(el.value) + sign * Math.max(1, Math.floor((high - low) / 20)));
    return true;
  }
  document.addEventListener('keydown', (e) => {
    if (!visible(document.getElementById('case-image')) || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
              (t.tagName === 'INPUT' && !['radio', 'range', 'checkbox', 'button'].includes(t.type)))) return;
    const key = e.key.toLowerCase();
    let handled = true;
    if (key === 'r') choose('answer', 'real');
    else if (key === 's') choose('answer', 'synthetic');
    else if (['1', '2', '3', '4', '5'].includes(key)) confidenceKey(key);
    else if (key === 'arrowleft' || key === 'arrowright') handled = nudge(t, key === 'arrowleft' ? -1 : 1);
    else if (key === 'enter') document.getElementById('submit-answer')?.click();
    else if (key === '+' || key === '=') zoom(1.25);
    else if (key === '-' || key === '_') zoom(0.8);
    else if (key === '0') reset();
    else handled = false;
    if (handled) e.preventDefault();
  });
  document.addEventListener('click', (e) => {
    const b = e.target.closest && e.target.closest('[data-ms]');
    if (!b) return;
    const act = b.getAttribute('data-ms');
    if (act === 'zoom-in') zoom(1.25); else if (act === 'zoom-out') zoom(0.8); else if (act === 'reset') reset();
  });
  document.addEventListener('input', (e) => {
    if (e.target.closest && e.target.closest('#confidence-slider')) confidenceGiven = true;
    if (e.target.id === 'ms-wl-centre') { view.centre = parseFloat(e.target.value); apply(); }
    if (e.target.id === 'ms-wl-width') { view.width = parseFloat(e.target.value); apply(); }
  });
  document.addEventListener('wheel', (e) => {
    const host = document.getElementById('case-image');
    if (!host || !host.contains(e.target) || !image()) return;
    e.preventDefault();
    zoom(e.deltaY < 0 ? 1.15 : 1 / 1.15);
  }, { passive: false });
  let drag = null;
  document.addEventListener('mousedown', (e) => {
    const el = image();
    if (!el || e.target !== el || view.zoom === 1) return;
    drag = { x: e.clientX - view.x, y: e.clientY - view.y }; e.preventDefault();
  });
  document.addEventListener('mousemove', (e) => { if (drag) { view.x = e.clientX - drag.x; view.y = e.clientY - drag.y; apply(); } });
  document.addEventListener('mouseup', () => { drag = null; });
  // a new case resets the view and the confidence mark; re-apply after Gradio re-renders the image
  new MutationObserver(() => {
    const el = image();
    const src = el ? el.getAttribute('src') : null;
    if (src !== view.src) { view.src = src; confidenceGiven = false; Object.assign(view, { zoom: 1, x: 0, y: 0 }); apply(); }
  }).observe(document.documentElement, { subtree: true, childList: true, attributes: true, attributeFilter: ['src'] });
})();
</script>
"""
