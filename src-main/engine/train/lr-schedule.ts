// Learning-rate schedules, as in diffusers' get_scheduler: a warmup ramp then constant, cosine or
// linear decay. `step` is 0-based (the rate used for the update at step + 1).

export type LrScheduleName = 'constant' | 'constant_with_warmup' | 'cosine' | 'linear';

export interface LrSchedule {
  name: LrScheduleName;
  lr: number;
  warmupSteps: number;
  totalSteps: number;
}

export function learningRateAt(schedule: LrSchedule, step: number): number {
  const { name, lr, warmupSteps, totalSteps } = schedule;
  if (name !== 'constant' && step < warmupSteps) return (lr * step) / Math.max(1, warmupSteps);
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  switch (name) {
    case 'constant':
    case 'constant_with_warmup':
      return lr;
    case 'cosine':
      return lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
    case 'linear':
      return lr * Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
  }
}
