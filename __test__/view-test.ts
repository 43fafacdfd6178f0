// Tests that need views, for ava spec files only (helpers.ts is imported outside ava too, which
// must not load ava).
import test from 'ava'
import { NEEDS_VIEWS, NO_EXTERNAL } from './helpers.js'

type Register = (...args: unknown[]) => void

/** `test`, or (without external buffers) a skip that says why: for tests whose subject needs views. */
export const viewTest = ((title: string, ...rest: unknown[]) =>
  NO_EXTERNAL ? (test.skip as Register)(title + NEEDS_VIEWS, ...rest) : (test as Register)(title, ...rest)) as typeof test

/** `test.serial`, or (without external buffers) a skip that says why. */
export const viewTestSerial = ((title: string, ...rest: unknown[]) =>
  NO_EXTERNAL ? (test.skip as Register)(title + NEEDS_VIEWS, ...rest) : (test.serial as Register)(title, ...rest)) as typeof test
