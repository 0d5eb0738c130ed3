/** Every webhook parser by kind (the configuration's `kind`). */
import type { Webhook } from '../rules/config.js';
import { parseDistribution } from './distribution.js';
import type { DeliveryParser } from './types.js';

export const PARSERS: Partial<Record<Webhook['kind'], DeliveryParser>> = {
  distribution: parseDistribution,
};
