// Loading a handler named as Lambda names it: "FILE.EXPORT", the file
// relative to a directory (Lambda's task root), e.g. "index.handler",
// "./src/app.handlers.connect" (nested exports are followed).

import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Splits a handler string into the module path (without extension) and
 * the export path.
 * @param {string} spec
 * @returns {{module: string, names: string[]}}
 */
export function parseHandler(spec) {
  const slash = spec.lastIndexOf('/');
  const dir = spec.slice(0, slash + 1);
  const base = spec.slice(slash + 1);
  const dot = base.indexOf('.');
  const names = dot > 0 ? base.slice(dot + 1).split('.') : [];
  if (dot <= 0 || names.some((n) => n === '')) {
    throw new Error(`handler ${JSON.stringify(spec)}: want FILE.EXPORT, e.g. ./index.handler (the file's name without .js/.mjs/.cjs, then the exported function)`);
  }
  return { module: dir + base.slice(0, dot), names };
}

/**
 * Imports the module of spec from root and returns its exported function.
 * The file is FILE.js, FILE.mjs or FILE.cjs, as the Lambda runtime looks
 * for it; CommonJS (module.exports / exports.handler) and ES modules both work.
 * @param {string} spec
 * @param {string} root the directory handler paths are relative to
 * @returns {Promise<Function>}
 */
export async function loadHandler(spec, root) {
  const { module, names } = parseHandler(spec);
  const base = path.resolve(root, module);
  const file = ['.js', '.mjs', '.cjs'].map((ext) => base + ext).find((f) => existsSync(f) && statSync(f).isFile());
  if (!file) throw new Error(`handler ${JSON.stringify(spec)}: no ${base}.js, .mjs or .cjs`);
  const mod = await import(pathToFileURL(file).href);
  const fn = follow(mod, names) ?? follow(mod.default, names);
  if (typeof fn !== 'function') {
    throw new Error(`handler ${JSON.stringify(spec)}: ${file} exports no function ${names.join('.')}`);
  }
  return fn;
}

/** @param {any} obj @param {string[]} names */
function follow(obj, names) {
  for (const n of names) {
    if (obj === null || obj === undefined) return undefined;
    obj = obj[n];
  }
  return obj;
}
