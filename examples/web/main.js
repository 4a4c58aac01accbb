// Kiln's browser demo, the page half: drawing, MNIST-style downsampling, the loss curve. The
// model runs in Rust (src/lib.rs), compiled to wasm by build.sh into pkg/.
import init, { Demo } from './pkg/kiln_web_demo.js';

const $ = (id) => document.getElementById(id);
// What the browser test reads: losses as they arrive, speed, readiness.
const status = (window.kilnDemo = { ready: false, modelLoaded: false, losses: [], stepsPerSecond: null, prediction: null });

function showNotice(text) {
  $('notice').textContent = text;
  $('notice').hidden = false;
}

function showModelError(text) {
  $('model-error').textContent = text;
  $('model-error').hidden = false;
  $('model-status').textContent = 'No pre-trained model.';
}

// ---------------------------------------------------------------- drawing
const draw = $('draw');
const pen = draw.getContext('2d', { willReadFrequently: true });
function clearDrawing() {
  pen.fillStyle = '#000';
  pen.fillRect(0, 0, draw.width, draw.height);
  $('prediction').textContent = '–';
  $('bars').replaceChildren();
  $('seen').getContext('2d').clearRect(0, 0, 28, 28);
  status.prediction = null;
}
clearDrawing();
pen.lineCap = pen.lineJoin = 'round';
pen.lineWidth = 20;
pen.strokeStyle = '#fff';
let last = null;
const at = (e) => {
  const r = draw.getBoundingClientRect();
  return [((e.clientX - r.left) * draw.width) / r.width, ((e.clientY - r.top) * draw.height) / r.height];
};
draw.addEventListener('pointerdown', (e) => {
  draw.setPointerCapture(e.pointerId);
  last = at(e);
  pen.beginPath();
  pen.arc(last[0], last[1], pen.lineWidth / 2, 0, 2 * Math.PI);
  pen.fillStyle = '#fff';
  pen.fill();
});
draw.addEventListener('pointermove', (e) => {
  if (!last) return;
  const p = at(e);
  pen.beginPath();
  pen.moveTo(...last);
  pen.lineTo(...p);
  pen.stroke();
  last = p;
});
const finishStroke = () => {
  if (!last) return;
  last = null;
  classifyDrawing();
};
draw.addEventListener('pointerup', finishStroke);
draw.addEventListener('pointercancel', finishStroke);
$('clear').addEventListener('click', clearDrawing);

// MNIST's own preprocessing: the ink's bounding box scaled to fit 20×20 (aspect kept), then
// placed in a 28×28 field so that its centre of mass is at the centre.
function mnistPixels() {
  const { width, height } = draw;
  const img = pen.getImageData(0, 0, width, height).data;
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      if (img[4 * (y * width + x)] > 20) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x);
        y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
  if (x1 < 0) return null;
  const [w, h] = [x1 - x0 + 1, y1 - y0 + 1];
  const scale = 20 / Math.max(w, h);
  const [sw, sh] = [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale))];
  const small = new OffscreenCanvas(sw, sh).getContext('2d', { willReadFrequently: true });
  small.imageSmoothingQuality = 'high';
  small.drawImage(draw, x0, y0, w, h, 0, 0, sw, sh);
  const s = small.getImageData(0, 0, sw, sh).data;
  let [mass, cx, cy] = [0, 0, 0];
  for (let y = 0; y < sh; y++)
    for (let x = 0; x < sw; x++) {
      const v = s[4 * (y * sw + x)];
      mass += v; cx += v * x; cy += v * y;
    }
  const [ox, oy] = [Math.round(14 - cx / mass - 0.5), Math.round(14 - cy / mass - 0.5)];
  const pixels = new Uint8Array(28 * 28);
  for (let y = 0; y < sh; y++)
    for (let x = 0; x < sw; x++) {
      const [tx, ty] = [x + ox, y + oy];
      if (tx >= 0 && tx < 28 && ty >= 0 && ty < 28) pixels[ty * 28 + tx] = s[4 * (y * sw + x)];
    }
  const seen = $('seen').getContext('2d');
  const view = seen.createImageData(28, 28);
  pixels.forEach((v, i) => view.data.set([v, v, v, 255], 4 * i));
  seen.putImageData(view, 0, 0);
  return pixels;
}

let demo = null;
async function classifyDrawing() {
  const pixels = mnistPixels();
  if (!pixels || !demo) return;
  try {
    const probs = await demo.classify(pixels);
    const best = probs.indexOf(Math.max(...probs));
    status.prediction = best;
    $('prediction').textContent = String(best);
    $('bars').replaceChildren(
      ...Array.from(probs).flatMap((p, d) => {
        const bar = document.createElement('div');
        bar.className = 'bar';
        bar.innerHTML = `<div style="width:${(100 * p).toFixed(1)}%"></div>`;
        return [text(String(d)), bar, text(`${(100 * p).toFixed(1)}%`)];
      }),
    );
  } catch (e) {
    $('prediction').textContent = '?';
    showModelError(`Cannot classify: ${e.message ?? e}`);
  }
}
const text = (t) => Object.assign(document.createElement('span'), { textContent: t });

// ---------------------------------------------------------------- training
let stopRequested = false;
const TOTAL_STEPS = 300;
const BATCH = 64;

function plotLoss() {
  const c = $('loss');
  const g = c.getContext('2d');
  const [w, h, pad] = [c.width, c.height, 28];
  g.clearRect(0, 0, w, h);
  g.strokeStyle = '#999';
  g.beginPath();
  g.moveTo(pad, 6); g.lineTo(pad, h - pad); g.lineTo(w - 6, h - pad);
  g.stroke();
  g.fillStyle = '#555';
  g.font = '11px system-ui';
  g.fillText('loss', 2, 12);
  g.fillText(`step ${TOTAL_STEPS}`, w - 60, h - 10);
  g.fillText('0', pad - 10, h - pad + 12);
  const pts = status.losses;
  if (pts.length === 0) return;
  const top = Math.max(...pts.map((p) => p.loss)) * 1.05;
  g.fillText(top.toFixed(2), 2, 24);
  const X = (s) => pad + ((w - pad - 8) * s) / TOTAL_STEPS;
  const Y = (l) => h - pad - ((h - pad - 8) * l) / top;
  g.strokeStyle = '#c0582b';
  g.lineWidth = 2;
  g.beginPath();
  pts.forEach((p, i) => (i ? g.lineTo(X(p.step), Y(p.loss)) : g.moveTo(X(p.step), Y(p.loss))));
  g.stroke();
}
plotLoss();

async function trainHere() {
  $('train').disabled = true;
  $('stop').disabled = false;
  stopRequested = false;
  status.losses = [];
  try {
    $('train-status').textContent = 'Fetching the MNIST slice…';
    const response = await fetch('mnist-slice.bin');
    if (!response.ok) throw new Error(`mnist-slice.bin: HTTP ${response.status} (run examples/web/build.sh, which writes it from data/mnist)`);
    const n = demo.startTraining(new Uint8Array(await response.arrayBuffer()), BATCH, 1e-3);
    // Steps recorded per call: the GPU takes a few at once; the CPU one, so the page repaints.
    const chunk = demo.onGpu ? 5 : 1;
    let step = 0;
    let warm = null; // [time, step] after the first call, which also compiles the kernels
    while (step < TOTAL_STEPS && !stopRequested) {
      const loss = await demo.train(chunk);
      step += chunk;
      status.losses.push({ step, loss });
      if (!warm) warm = [performance.now(), step];
      else status.stepsPerSecond = (step - warm[1]) / ((performance.now() - warm[0]) / 1000);
      $('progress').value = step / TOTAL_STEPS;
      $('train-status').textContent =
        `Step ${step}/${TOTAL_STEPS} on ${n} images, batch ${BATCH}: loss ${loss.toFixed(3)}` +
        (status.stepsPerSecond ? `, ${status.stepsPerSecond.toFixed(2)} steps/s` : ' (compiling kernels)');
      plotLoss();
    }
    demo.useTrainedModel();
    status.modelLoaded = true;
    $('model-error').hidden = true;
    $('model-status').textContent = `Classifying with the model trained here (${step} steps).`;
    $('train-status').textContent += stopRequested ? ' (stopped)' : ' (done)';
  } catch (e) {
    $('train-status').textContent = `Training failed: ${e.message ?? e}`;
  }
  $('train').disabled = false;
  $('stop').disabled = true;
}
$('train').addEventListener('click', trainHere);
$('stop').addEventListener('click', () => (stopRequested = true));

// ---------------------------------------------------------------- start
async function start() {
  $('train').disabled = true;
  await init();
  const forceCpu = new URLSearchParams(location.search).has('cpu');
  if (!('gpu' in navigator) && !forceCpu)
    showNotice('This browser has no WebGPU (navigator.gpu is missing): Kiln runs on its CPU backend instead, which is much slower.');
  demo = await Demo.create(forceCpu);
  if (demo.gpuError && ('gpu' in navigator || forceCpu))
    showNotice(`No WebGPU device: ${demo.gpuError}. Kiln runs on its CPU backend instead.`);
  $('device').textContent = `Device: ${demo.device}`;
  $('train').disabled = false;
  try {
    const response = await fetch('model.safetensors');
    if (!response.ok)
      throw new Error(
        `model.safetensors was not found next to this page (HTTP ${response.status}). Train one natively with ` +
          '`cargo run --release --example mnist` and rerun examples/web/build.sh, which copies it here — or press "Train here".',
      );
    demo.loadModel(new Uint8Array(await response.arrayBuffer()));
    status.modelLoaded = true;
    $('model-status').textContent = 'Model: the native mnist example\'s MLP.';
  } catch (e) {
    showModelError(`Cannot load the model: ${e.message ?? e}`);
  }
  status.ready = true;
}
start().catch((e) => {
  showNotice(`Kiln failed to start: ${e.message ?? e}`);
  status.ready = true;
  status.failed = String(e.message ?? e);
});
