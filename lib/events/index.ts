/** Every webhook parser by kind (the configuration's `kind`). */
import type { Webhook } from '../rules/config.js';
import { parseAcr } from './acr.js';
import { parseDistribution } from './distribution.js';
import { parseDockerHub } from './dockerhub.js';
import { parseGar } from './gar.js';
import { parseGitHub } from './github.js';
import { parseHarbor } from './harbor.js';
import { parseQuay } from './quay.js';
import type { DeliveryParser } from './types.js';

export const PARSERS: Partial<Record<Webhook['kind'], DeliveryParser>> = {
  distribution: parseDistribution,
  harbor: parseHarbor,
  dockerhub: parseDockerHub,
  github: parseGitHub,
  quay: parseQuay,
  acr: parseAcr,
  gar: parseGar,
};
