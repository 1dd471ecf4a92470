import { existsSync } from 'node:fs';
import puppeteer, { type Browser } from 'puppeteer-core';
import { CliProcess } from './cli';

// Headless Chromium for the page tests (test/browser/*), and the viewer the built CLI serves: one
// place for where Chromium is (scripts/test.mjs installs Debian's package) and how it is started.

export const CHROMIUM = process.env.ATELIER_CHROMIUM ?? '/usr/bin/chromium';

/** Fails at once, naming the install step, where Chromium is missing. */
export function assertChromium(): void {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: the test setup (npm test) installs Debian's chromium`);
}

export function launchChromium(): Promise<Browser> {
  assertChromium();
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root in a container: no sandbox; no GPU; /dev/shm is small there.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

/** `atelier view <args>` started, and the URL it prints. */
export async function startViewerCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ viewer: CliProcess; url: string }> {
  const viewer = new CliProcess(['view', ...args], env);
  await viewer.waitForOutput(/http:\/\/127\.0\.0\.1:\d+\//);
  return { viewer, url: /http:\/\/127\.0\.0\.1:\d+\//.exec(viewer.output)![0] };
}
