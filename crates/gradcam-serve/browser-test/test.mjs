// gradcam serve's page in a real browser: the system's Chromium, headless, driven by playwright-core.
// Starts `gradcam serve` on a free loopback port, loads the page, uploads a photo, clicks a class, adds a second
// method, waits for the pictures, checks that the overlay is drawn and that the opacity slider re-blends it
// without a request, that no JavaScript error or console error happened, and saves screenshots.
//
// usage: node test.mjs   (env: GRADCAM_BIN, PHOTO, CHROMIUM, SHOTS; defaults below)
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdirSync, existsSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const home = process.env.GRADCAM_HOME || join(process.env.XDG_CACHE_HOME || join(os.homedir(), '.cache'), 'gradcam');
const bin = process.env.GRADCAM_BIN || join(root, 'target/release/gradcam');
const photo = process.env.PHOTO || join(home, 'examples/chelsea.png');
const browserPath = process.env.CHROMIUM || ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome']
  .find((p) => existsSync(p));
const shots = process.env.SHOTS || join(here, 'screenshots');
const T = 120000; // per step: the machine may be shared and slow

function fail(msg) { throw new Error(msg); }
for (const [what, p] of [['gradcam binary (cargo build --release)', bin], ['photo (scripts/fetch-assets.sh)', photo]]) {
  if (!existsSync(p)) fail(`no ${what} at ${p}`);
}
if (!browserPath) fail('no Chromium found (apt-get install chromium, or set CHROMIUM)');
mkdirSync(shots, { recursive: true });

// the server, on a port the system picks
const server = spawn(bin, ['serve', '--bind', '127.0.0.1:0', '--workers', '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((ok, ko) => {
  let out = '';
  const timer = setTimeout(() => ko(new Error('gradcam serve did not say where it listens within 60 s: ' + out)), 60000);
  server.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/http:\/\/[0-9.]+:[0-9]+/);
    if (m) { clearTimeout(timer); ok(m[0]); }
  });
  server.on('exit', (c) => ko(new Error('gradcam serve exited with ' + c + ': ' + out)));
});
console.log('server at', url);

const browser = await chromium.launch({ executablePath: browserPath, headless: true, args: ['--no-sandbox'] });
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push('console: ' + m.text()); });
  page.on('pageerror', (e) => errors.push('page error: ' + e.message));
  const apiRequests = [];
  page.on('request', (r) => { if (new URL(r.url()).pathname.startsWith('/v1/')) apiRequests.push(r.url()); });

  await page.goto(url, { timeout: T });
  await page.waitForFunction(() => document.querySelectorAll('#layer option').length > 0, null, { timeout: T });
  const status = await page.textContent('#status');
  if (!/Ready/.test(status)) fail('the page did not get ready: ' + status);

  // upload a photo: the top-5 classes appear
  await page.setInputFiles('#file', photo);
  await page.waitForFunction(() => document.querySelectorAll('#classes button').length === 5, null, { timeout: T });
  const top = await page.textContent('#classes button');
  console.log('top class:', top.replace(/\s+/g, ' ').trim());
  await page.screenshot({ path: join(shots, '1-classes.png'), fullPage: true });

  // click the first class: one card with a drawn overlay
  await page.click('#classes li:first-child button');
  await page.waitForSelector('.card canvas.overlay', { timeout: T });
  // a second method: two cards and the comparison grid
  await page.check('input[data-method="gradcam++"]');
  await page.waitForFunction(() => document.querySelectorAll('.card').length === 2
    && !document.getElementById('grid-wrap').hidden && document.getElementById('grid').naturalWidth > 0, null, { timeout: T });
  const methods = await page.$$eval('.card', (cs) => cs.map((c) => c.dataset.method));
  if (methods.join(',') !== 'gradcam,gradcam++') fail('cards for ' + methods);
  const canvas = page.locator('.card canvas.overlay').first();
  if (!(await canvas.isVisible())) fail('the overlay is not visible');
  const box = await canvas.boundingBox();
  if (!box || box.width < 100 || box.height < 60) fail('the overlay is too small: ' + JSON.stringify(box));
  // the overlay is drawn: the photo and the heat map, not one colour
  const sample = () => page.$eval('.card canvas.overlay', (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sq = 0, n = 0;
    for (let i = 0; i < d.length; i += 4 * 97) { const v = d[i] + d[i + 1] + d[i + 2]; sum += v; sq += v * v; n++; }
    return { mean: sum / n, sd: Math.sqrt(sq / n - (sum / n) ** 2), w: c.width, h: c.height, r: d[0] };
  });
  const before = await sample();
  if (before.sd < 10) fail('the overlay looks blank: ' + JSON.stringify(before));
  const { w, h } = before;
  console.log(`overlay ${w}x${h} drawn (pixel sd ${before.sd.toFixed(1)})`);

  // the opacity slider re-blends in the page, without a request
  const n = apiRequests.length;
  await page.$eval('#alpha', (s) => { s.value = '0.95'; s.dispatchEvent(new Event('input')); });
  const after = await sample();
  if (Math.abs(after.mean - before.mean) < 1) fail('the slider did not change the overlay');
  await page.waitForTimeout(500);
  if (apiRequests.length !== n) fail('the slider made a request: ' + apiRequests.slice(n));
  // the downloads are there
  for (const sel of ['.card .downloads a[download$=".npy"]', '#report-download', '#grid-download']) {
    if (!(await page.locator(sel).first().isVisible())) fail(sel + ' is not shown');
  }
  await page.screenshot({ path: join(shots, '2-explained.png'), fullPage: true });
  await canvas.screenshot({ path: join(shots, '3-overlay.png') });
  if (errors.length) fail('errors in the page:\n' + errors.join('\n'));
  if (!(await page.locator('#error').isHidden())) fail('the page shows an error: ' + (await page.textContent('#error')));

  // a file that is not an image: the server's error is shown on the page
  await page.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a photo') });
  await page.waitForSelector('#error:not([hidden])', { timeout: T });
  const shown = await page.textContent('#error');
  if (!/400.*not a readable image/.test(shown)) fail('unexpected error text: ' + shown);
  await page.screenshot({ path: join(shots, '4-error.png'), fullPage: true });
  // the only console line since is the browser's own note of the 400 answer
  const other = errors.filter((e) => !/status of 400/.test(e));
  if (other.length) fail('errors in the page:\n' + other.join('\n'));
  writeFileSync(join(shots, 'api-requests.txt'), apiRequests.join('\n') + '\n');
  console.log('browser test passed; screenshots in', shots);
} catch (e) {
  console.error('browser test FAILED:', e.message);
  code = 1;
} finally {
  await browser.close();
  server.kill();
}
process.exit(code);
