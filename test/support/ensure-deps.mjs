#!/usr/bin/env node
// Checks that the commands the integration tests drive are on PATH; installs the Debian packages
// when running as root with apt-get, otherwise exits 1 naming the packages to install.
// Plain JS on purpose: it runs before anything is installed or compiled.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** command -> Debian package */
const COMMANDS = {
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  umoci: 'umoci',
  htpasswd: 'apache2-utils',
  openssl: 'openssl',
};
const ALL_PACKAGES = ['docker-registry', 'skopeo', 'umoci', 'apache2-utils', 'openssl'];

function onPath(command) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, command), constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

const missing = () => Object.keys(COMMANDS).filter((c) => !onPath(c));
const packagesFor = (commands) => [...new Set(commands.map((c) => COMMANDS[c]))];

let absent = missing();
if (absent.length > 0) {
  const isRoot = process.getuid?.() === 0;
  if (isRoot && onPath('apt-get')) {
    console.log(`ensure-deps: missing ${absent.join(', ')}; installing ${ALL_PACKAGES.join(' ')} with apt-get`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const update = spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
    if (update.status !== 0) {
      console.error(`ensure-deps: apt-get update failed (exit ${update.status ?? update.signal})`);
      process.exit(1);
    }
    const install = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...ALL_PACKAGES], {
      stdio: 'inherit',
      env,
    });
    if (install.status !== 0) {
      console.error(`ensure-deps: apt-get install failed (exit ${install.status ?? install.signal})`);
      process.exit(1);
    }
    // A machine with systemd may start the packaged registry on :5000; the tests run their own.
    if (existsSync('/run/systemd/system') && onPath('systemctl')) {
      spawnSync('systemctl', ['disable', '--now', 'docker-registry'], { stdio: 'ignore' });
    }
    absent = missing();
  }
  if (absent.length > 0) {
    const packages = packagesFor(absent);
    console.error(
      `ensure-deps: missing command(s) ${absent.join(', ')}. Install the Debian package(s): ` +
        `apt-get install -y --no-install-recommends ${packages.join(' ')}`,
    );
    process.exit(1);
  }
}

// skopeo's trust policy: the support layer always passes --insecure-policy, so a missing or
// strict /etc/containers/policy.json does not matter; say so when it is missing.
const policyNote = existsSync('/etc/containers/policy.json') ? '' : ' (no /etc/containers/policy.json; tests use --insecure-policy)';
console.log(`ensure-deps: ${Object.keys(COMMANDS).join(', ')} present${policyNote}`);
