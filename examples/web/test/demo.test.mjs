// Browser test of the demo page: serves examples/web from a local server, drives Debian's
// Chromium (playwright-core, WebGPU on) through it, draws digits, checks the predicted classes,
// trains a few seconds, checks that the loss fell, and saves a screenshot.
//
//   node examples/web/test/demo.test.mjs          (after examples/web/build.sh and npm ci)
//
// Environment: CHROMIUM (default /usr/lib/chromium/chromium), KILN_WEB_SCREENSHOT (default
// examples/web/screenshot.png), KILN_REQUIRE_GPU=1 (the page must run on WebGPU, not the CPU
// fallback), KILN_WEB_TRAIN_SECONDS (default 8).
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const screenshot = process.env.KILN_WEB_SCREENSHOT ?? path.join(root, 'screenshot.png');
const requireGpu = process.env.KILN_REQUIRE_GPU === '1';
const trainSeconds = Number(process.env.KILN_WEB_TRAIN_SECONDS ?? 8);
const hasModel = fs.existsSync(path.join(root, 'model.safetensors'));

function fail(msg) {
  throw new Error(msg);
}

// ------------------------------------------------------------------ a static file server
const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm' };
const server = http.createServer((req, res) => {
  const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/^\/+/, '') || 'index.html';
  const file = path.resolve(root, rel);
  if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404).end('not found');
    return;
  }
  res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const url = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/lib/chromium/chromium',
  headless: true,
  args: ['--enable-unsafe-webgpu', '--no-sandbox', '--headless=new', '--disable-dev-shm-usage'],
});
const log = [];
let summary = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => window.kilnDemo?.ready, null, { timeout: 180_000 });
  const start = await page.evaluate(() => ({
    failed: window.kilnDemo.failed ?? null,
    device: document.getElementById('device').textContent,
    notice: document.getElementById('notice').hidden ? null : document.getElementById('notice').textContent,
    modelLoaded: window.kilnDemo.modelLoaded,
    modelError: document.getElementById('model-error').hidden ? null : document.getElementById('model-error').textContent,
    webgpu: 'gpu' in navigator,
  }));
  console.log(`page: ${start.device}${start.notice ? ` | notice: ${start.notice}` : ''}`);
  if (start.failed) fail(`the page failed to start: ${start.failed}`);
  if (requireGpu && !start.device.startsWith('Device: gpu')) fail(`KILN_REQUIRE_GPU=1 but the page runs on ${start.device} (${start.notice})`);
  if (hasModel && !start.modelLoaded) fail(`model.safetensors is served but did not load: ${start.modelError}`);
  if (!hasModel && !start.modelError) fail('no model.safetensors, yet the page shows no error about it');

  const box = await page.locator('#draw').boundingBox();
  async function drawDigit(points) {
    await page.click('#clear');
    await page.evaluate(() => (window.kilnDemo.prediction = null));
    await page.mouse.move(box.x + points[0][0], box.y + points[0][1]);
    await page.mouse.down();
    for (const [x, y] of points.slice(1)) await page.mouse.move(box.x + x, box.y + y, { steps: 4 });
    await page.mouse.up();
    await page.waitForFunction(() => window.kilnDemo.prediction !== null, null, { timeout: 60_000 });
    return page.evaluate(() => window.kilnDemo.prediction);
  }
  const zero = Array.from({ length: 41 }, (_, i) => {
    const a = (2 * Math.PI * i) / 40;
    return [140 + 62 * Math.sin(a), 140 - 95 * Math.cos(a)];
  });
  const one = [[150, 40], [146, 100], [142, 170], [140, 240]];
  const seven = [[70, 50], [210, 50], [180, 110], [150, 170], [125, 240]];
  const predictions = {};
  if (hasModel) {
    for (const [digit, points] of [[0, zero], [7, seven], [1, one]]) {
      predictions[digit] = await drawDigit(points);
      console.log(`drew a ${digit}: the page predicts ${predictions[digit]}`);
      if (predictions[digit] !== digit) fail(`drew a ${digit}, the model predicted ${predictions[digit]}`);
    }
  }

  // Train in the tab for a few seconds, then stop.
  await page.click('#train');
  const began = Date.now();
  await page.waitForFunction(() => window.kilnDemo.losses.length >= 3, null, { timeout: 300_000 });
  while (Date.now() - began < trainSeconds * 1000) await page.waitForTimeout(250);
  await page.click('#stop');
  await page.waitForFunction(() => !document.getElementById('train').disabled, null, { timeout: 120_000 });
  const trained = await page.evaluate(() => ({
    losses: window.kilnDemo.losses,
    stepsPerSecond: window.kilnDemo.stepsPerSecond,
    status: document.getElementById('train-status').textContent,
  }));
  console.log(trained.status);
  const losses = trained.losses.map((p) => p.loss);
  const first = losses[0];
  const lastTwo = losses.slice(-2).reduce((a, b) => a + b, 0) / Math.min(2, losses.length);
  if (!(losses.length >= 3 && lastTwo < 0.8 * first)) fail(`the loss did not fall: ${JSON.stringify(trained.losses)}`);
  // The tab-trained model now classifies; without a served model this is the only check.
  const afterTraining = await drawDigit(one);
  console.log(`after training in the tab, a drawn 1 is predicted ${afterTraining}`);
  if (!hasModel && trained.losses.at(-1).step >= 100 && afterTraining !== 1) fail(`the tab-trained model predicts ${afterTraining} for a 1`);

  await page.screenshot({ path: screenshot, fullPage: true });

  // Bad cases. A model file that is missing or corrupt: a visible error, and the page still works.
  for (const [what, reply] of [
    ['missing', { status: 404, body: 'not found' }],
    ['corrupt', { status: 200, body: Buffer.from('not a safetensors file at all') }],
  ]) {
    const p = await browser.newPage();
    await p.route('**/model.safetensors', (route) => route.fulfill(reply));
    await p.goto(url);
    await p.waitForFunction(() => window.kilnDemo?.ready, null, { timeout: 120_000 });
    const shown = await p.evaluate(() => !document.getElementById('model-error').hidden && document.getElementById('model-error').textContent);
    console.log(`${what} model: ${shown}`);
    if (!shown || !/Cannot load the model/.test(shown)) fail(`a ${what} model file shows no error`);
    await p.close();
  }
  // A browser without WebGPU (Chromium without --enable-unsafe-webgpu has no adapter): a
  // notice, and the CPU backend (compiled to wasm) classifies instead.
  const plain = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/lib/chromium/chromium',
    headless: true,
    args: ['--no-sandbox', '--headless=new', '--disable-dev-shm-usage'],
  });
  try {
    const p = await plain.newPage({ viewport: { width: 1280, height: 720 } });
    await p.goto(url);
    await p.waitForFunction(() => window.kilnDemo?.ready, null, { timeout: 120_000 });
    const fallback = await p.evaluate(() => ({
      device: document.getElementById('device').textContent,
      notice: document.getElementById('notice').hidden ? null : document.getElementById('notice').textContent,
    }));
    console.log(`without WebGPU: ${fallback.device} | ${fallback.notice}`);
    if (!fallback.device.startsWith('Device: cpu') || !fallback.notice) fail('without WebGPU the page shows no notice or is not on the CPU backend');
    if (hasModel) {
      const b = await p.locator('#draw').boundingBox();
      await p.mouse.move(b.x + one[0][0], b.y + one[0][1]);
      await p.mouse.down();
      for (const [x, y] of one.slice(1)) await p.mouse.move(b.x + x, b.y + y, { steps: 4 });
      await p.mouse.up();
      await p.waitForFunction(() => window.kilnDemo.prediction !== null, null, { timeout: 60_000 });
      const cpuPrediction = await p.evaluate(() => window.kilnDemo.prediction);
      console.log(`without WebGPU, a drawn 1 is predicted ${cpuPrediction} on the CPU backend`);
      if (cpuPrediction !== 1) fail(`the CPU fallback predicts ${cpuPrediction} for a 1`);
    }
  } finally {
    await plain.close();
  }
  summary = { device: start.device, predictions, afterTraining, steps: trained.losses.at(-1).step, stepsPerSecond: trained.stepsPerSecond, firstLoss: first, lastLoss: losses.at(-1), screenshot };
  console.log(`demo test passed: ${JSON.stringify(summary)}`);
} catch (e) {
  console.error(log.join('\n'));
  console.error(`demo test FAILED: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  server.close();
}
