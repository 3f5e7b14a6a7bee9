// The NiiVue viewer as a Streamlit component (components v1 messaging, written out here so no
// extra library is needed): the page sends volumes as gzipped NIfTI bytes with content keys, a colour
// layer and the crosshair in MNI mm; a click on a slice sends the new crosshair back.
import { Niivue, SHOW_RENDER } from "@niivue/niivue";

const post = (type, extra) => window.parent.postMessage({ isStreamlitMessage: true, type, ...extra }, "*");
const setHeight = () => post("streamlit:setFrameHeight", { height: document.documentElement.scrollHeight });
const setValue = (value) => post("streamlit:setComponentValue", { value, dataType: "json" });

const $ = (id) => document.getElementById(id);
const canvas = $("gl");
const nv = new Niivue({
  backColor: [0.055, 0.067, 0.09, 1],
  crosshairColor: [0, 1, 0.47, 1],
  crosshairWidth: 1,
  show3Dcrosshair: true,
  isColorbar: false,
  isOrientCube: false,
  dragAndDropEnabled: false,
  multiplanarShowRender: SHOW_RENDER.ALWAYS,
  loadingText: "loading",
});
const ready = nv.attachToCanvas(canvas);
window.niivue = nv;   // for the browser tests (tile positions)

let args = null;
let loaded = "";          // keys of the volumes on screen
let loadedLayer = "";     // the colour layer they were drawn with
let layerSpec = null;     // colour layer of the map (from the page)
let threshold = 0;
let cmapSerial = 0;
let crosshairApplied = "";
let overlayIndex = -1;
let atlasIndex = -1;
let atlasNames = {};
let pointerDown = false;

const fmt = (v) => {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : v.toPrecision(3);
};
const mmText = (mm) => `MNI (${mm.slice(0, 3).map((v) => Math.round(v)).join(", ")}) mm`;

function blobUrl(bytes) {
  return URL.createObjectURL(new Blob([bytes], { type: "application/gzip" }));
}

// The layer's lookup table with every entry below the threshold transparent (same value, same colour).
// Values below cal_min take entry 0, so its alpha (from the page) decides whether they show.
function colormapWithThreshold() {
  const c = layerSpec.cmap;
  const n = c.I.length;
  const A = c.A.map((a, i) => {
    const v = layerSpec.cal_min + (layerSpec.cal_max - layerSpec.cal_min) * (c.I[i] / 255);
    const shown = layerSpec.signed ? Math.abs(v) >= threshold : v >= threshold;
    return shown || i === 0 ? a : 0;
  });
  const name = `relevance_atlas_${++cmapSerial}`;
  nv.addColormap(name, { R: c.R, G: c.G, B: c.B, A, I: c.I.slice(0, n) });
  return name;
}

function sliderToThreshold(pos) {
  const [lo, hi] = layerSpec.threshold_range;
  return lo + (hi - lo) * (pos / 1000);
}

function showControls() {
  const has = overlayIndex >= 0 && layerSpec;
  $("thr-box").style.display = has ? "" : "none";
  $("opa-box").style.display = has ? "" : "none";
  if (!has) return;
  const [lo, hi] = layerSpec.threshold_range;
  $("thr").value = String(Math.round(1000 * (threshold - lo) / Math.max(hi - lo, 1e-30)));
  $("thr-val").textContent = fmt(threshold);
  $("opa").value = String(Math.round(100 * nv.volumes[overlayIndex].opacity));
  $("opa-val").textContent = `${$("opa").value} %`;
}

async function loadVolumes() {
  const list = [{ url: blobUrl(args.anatomy), name: "anatomy.nii.gz", colormap: "gray",
                  cal_min: args.anatomy_range[0], cal_max: args.anatomy_range[1], opacity: 1 }];
  overlayIndex = -1;
  atlasIndex = -1;
  if (args.overlay) {
    layerSpec = args.layer;
    threshold = layerSpec.threshold;
    overlayIndex = list.length;
    list.push({ url: blobUrl(args.overlay), name: "map.nii.gz", colormap: colormapWithThreshold(),
                cal_min: layerSpec.cal_min, cal_max: layerSpec.cal_max, opacity: layerSpec.opacity });
  }
  if (args.atlas) {   // only read under the cursor, never drawn
    atlasIndex = list.length;
    list.push({ url: blobUrl(args.atlas), name: "atlas.nii.gz", colormap: "gray", opacity: 0 });
  }
  await nv.loadVolumes(list);
  list.forEach((v) => URL.revokeObjectURL(v.url));
  if (overlayIndex >= 0) {   // loadVolumes may recompute the range from the data: keep the page's scale
    const ov = nv.volumes[overlayIndex];
    ov.cal_min = layerSpec.cal_min;
    ov.cal_max = layerSpec.cal_max;
    const bg = nv.volumes[0];
    bg.cal_min = args.anatomy_range[0];
    bg.cal_max = args.anatomy_range[1];
    nv.updateGLVolume();
  }
  crosshairApplied = "";
}

function applyLayer(spec) {
  layerSpec = spec;
  threshold = spec.threshold;
  const ov = nv.volumes[overlayIndex];
  ov.cal_min = spec.cal_min;
  ov.cal_max = spec.cal_max;
  ov.opacity = spec.opacity;
  nv.setColormap(ov.id, colormapWithThreshold());
}

function applyLayout() {
  const layout = $("layout").value;
  if (layout === "mpr" || layout === "slices") {
    nv.opts.multiplanarShowRender = layout === "mpr" ? SHOW_RENDER.ALWAYS : SHOW_RENDER.NEVER;
    nv.setSliceType(nv.sliceTypeMultiplanar);
  } else {
    nv.setSliceType({ axial: nv.sliceTypeAxial, coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal,
                      render: nv.sliceTypeRender }[layout]);
  }
}

function applyCrosshair() {
  const want = JSON.stringify(args.crosshair || null);
  if (!args.crosshair || want === crosshairApplied || !nv.volumes.length) return;
  nv.scene.crosshairPos = nv.mm2frac(args.crosshair);
  crosshairApplied = want;
  nv.drawScene();
}

function valueAt(index, mm) {
  const vol = nv.volumes[index];
  const vox = vol.mm2vox(mm);
  const dims = vol.dimsRAS || vol.hdr.dims;   // [3, nx, ny, nz]
  if (Array.from(vox).some((v, i) => v < 0 || v >= dims[i + 1])) return NaN;
  return vol.getValue(vox[0], vox[1], vox[2]);
}

function describe(mm) {
  const parts = [mmText(mm)];
  if (overlayIndex >= 0) {
    const v = valueAt(overlayIndex, mm);
    const lo = layerSpec.cal_min;
    const hi = layerSpec.cal_max;
    parts.push(`value ${v < lo ? "< " + fmt(lo) : v >= hi * (1 - 1e-6) && hi > 0 ? "≥ " + fmt(hi) : fmt(v)}`);
  }
  if (atlasIndex >= 0) {
    const label = Math.round(valueAt(atlasIndex, mm));
    parts.push(`region ${label > 0 ? (atlasNames[label] || `label ${label}`) : "outside the atlas"}`);
  }
  return parts.join(" · ");
}

// what lies under the cursor, read from the volumes in the browser (no round trip)
canvas.addEventListener("mousemove", (e) => {
  if (!nv.volumes.length) return;
  const rect = canvas.getBoundingClientRect();
  const dpr = nv.uiData?.dpr || window.devicePixelRatio || 1;
  const frac = nv.canvasPos2frac([(e.clientX - rect.left) * dpr, (e.clientY - rect.top) * dpr]);
  if (!frac || frac[0] < 0) {
    $("hover").innerHTML = "&nbsp;";
    return;
  }
  try {
    $("hover").textContent = "Under the cursor: " + describe(nv.frac2mm(frac));
  } catch (err) {
    $("hover").textContent = `Under the cursor: ${err}`;
  }
});
canvas.addEventListener("mouseleave", () => { $("hover").innerHTML = "&nbsp;"; });

// a click (or drag) on a slice moves the crosshair; its position goes to the page when the button is released
canvas.addEventListener("pointerdown", () => { pointerDown = true; });
window.addEventListener("pointerup", () => {
  if (!pointerDown || !nv.volumes.length) return;
  pointerDown = false;
  const mm = Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3).map((v) => Math.round(v * 100) / 100);
  const want = JSON.stringify(mm);
  if (want === crosshairApplied) return;
  crosshairApplied = want;
  setValue({ mm, at: Date.now() });
});

$("thr").addEventListener("input", () => {
  threshold = sliderToThreshold(Number($("thr").value));
  $("thr-val").textContent = fmt(threshold);
  nv.setColormap(nv.volumes[overlayIndex].id, colormapWithThreshold());
});
$("opa").addEventListener("input", () => {
  nv.setOpacity(overlayIndex, Number($("opa").value) / 100);
  $("opa-val").textContent = `${$("opa").value} %`;
});
$("layout").addEventListener("change", applyLayout);

async function render(newArgs) {
  args = newArgs;
  await ready;
  $("wrap").style.height = `${args.height}px`;   // NiiVue sizes its canvas to the parent
  atlasNames = args.atlas_names || {};
  const keys = [args.anatomy_key, args.overlay_key, args.atlas_key].join("|");
  const layerJson = JSON.stringify(args.layer || null);
  try {
    if (keys !== loaded) {
      loaded = keys;
      loadedLayer = layerJson;
      await loadVolumes();
      applyLayout();
      showControls();
    } else if (layerJson !== loadedLayer && overlayIndex >= 0 && args.layer) {
      loadedLayer = layerJson;   // same volumes, new colours or opacity from the page: no reload
      applyLayer(args.layer);
      showControls();
    }
    applyCrosshair();
    document.body.dataset.loaded = keys;   // tests wait for this
    $("error").textContent = "";
  } catch (err) {
    $("error").textContent = `The 3D viewer could not show these volumes: ${err}`;
  }
  nv.resizeListener();
  setHeight();
}

let queue = Promise.resolve();
window.addEventListener("message", (e) => {
  if (e.data?.type !== "streamlit:render") return;
  queue = queue.then(() => render(e.data.args));   // one render at a time, in order
});
post("streamlit:componentReady", { apiVersion: 1 });
setHeight();
