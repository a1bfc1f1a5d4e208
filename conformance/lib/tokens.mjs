// JSON Web Tokens for the tests, signed here with node:crypto (HS256), independently of the
// server's own signer; and, for comparison, the ones `headcount token` prints.

import { createHmac } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { HEADCOUNT_BIN } from './server.mjs';

const b64url = (data) => Buffer.from(data).toString('base64url');

const HASHES = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' };

/**
 * Signs `claims` with `secret`: HS256 unless `header.alg` names HS384 or HS512. `header`
 * overrides header fields.
 */
export function signJwt(secret, claims, header = {}) {
  const fullHeader = { alg: 'HS256', typ: 'JWT', ...header };
  const head = b64url(JSON.stringify(fullHeader));
  const body = b64url(JSON.stringify(claims));
  const hash = HASHES[fullHeader.alg] ?? 'sha256';
  const signature = createHmac(hash, secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * A token for `role` that expires `expIn` seconds from now (negative: already expired), with
 * `sub` and any `extra` claims.
 */
export function makeToken(secret, { role = 'authenticated', sub, expIn = 3600, extra = {} } = {}) {
  const iat = nowSeconds();
  const claims = { role, iat, exp: iat + expIn, ...extra };
  if (sub !== undefined) claims.sub = sub;
  return signJwt(secret, claims);
}

/** Decodes the claims of a token without verifying it. */
export function claimsOf(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

/** A token printed by `headcount token`. */
export async function cliToken(secret, { role = 'authenticated', sub, expIn } = {}) {
  const args = ['token', `--jwt-secret=${secret}`, `--role=${role}`];
  if (sub !== undefined) args.push(`--sub=${sub}`);
  // `--exp-in` takes positive durations only; an already expired token sets `exp` itself.
  if (expIn !== undefined) args.push(expIn > 0 ? `--exp-in=${expIn}` : `--claim=exp=${nowSeconds() + expIn}`);
  const { stdout } = await promisify(execFile)(HEADCOUNT_BIN, args, { timeout: 10_000 });
  return stdout.trim();
}
