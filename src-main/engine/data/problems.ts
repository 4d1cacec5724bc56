// Typed dataset problems: a code the studio and CLI can switch on, a severity, the file it is
// about (relative to the dataset folder) and a human message that names the file.
//
// Severity: 'error' excludes the image from training; 'warning' trains but deserves a look;
// 'info' is a fact we handle (EXIF rotation, CMYK, 16-bit, alpha, animation) that users like to know.
//
//   PROBLEM_SEVERITY, DatasetProblem, makeProblem(code, file, detail)

export type ProblemCode =
  | 'zero-byte'
  | 'unreadable'
  | 'truncated'
  | 'too-many-pixels'
  | 'too-small'
  | 'no-bucket'
  | 'exif-orientation'
  | 'cmyk'
  | 'high-bit-depth'
  | 'alpha'
  | 'animated'
  | 'duplicate'
  | 'missing-caption'
  | 'empty-caption'
  | 'caption-not-utf8'
  | 'multiple-captions'
  | 'orphan-caption';

export type ProblemSeverity = 'error' | 'warning' | 'info';

export const PROBLEM_SEVERITY: Readonly<Record<ProblemCode, ProblemSeverity>> = {
  'zero-byte': 'error',
  unreadable: 'error',
  truncated: 'error',
  'too-many-pixels': 'error',
  'too-small': 'warning',
  'no-bucket': 'error',
  'exif-orientation': 'info',
  cmyk: 'info',
  'high-bit-depth': 'info',
  alpha: 'info',
  animated: 'info',
  duplicate: 'warning',
  'missing-caption': 'warning',
  'empty-caption': 'warning',
  'caption-not-utf8': 'warning',
  'multiple-captions': 'info',
  'orphan-caption': 'warning',
};

export interface DatasetProblem {
  code: ProblemCode;
  severity: ProblemSeverity;
  /** Path relative to the dataset folder, with '/' separators. */
  file: string;
  /** One sentence that starts with the file name. */
  message: string;
}

export function makeProblem(code: ProblemCode, file: string, detail: string): DatasetProblem {
  return { code, severity: PROBLEM_SEVERITY[code], file, message: `${file}: ${detail}` };
}
