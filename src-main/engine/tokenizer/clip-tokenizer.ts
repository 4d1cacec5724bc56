// CLIP's byte-level BPE tokenizer, read from a tokenizer folder in the transformers layout
// (`vocab.json`, `merges.txt`, `tokenizer_config.json`), with the behaviour of transformers'
// CLIPTokenizer: NFC, whitespace runs collapsed to one space, lowercase, CLIP's split regex,
// byte-level BPE with a `</w>` word end, `<|startoftext|>` ... `<|endoftext|>`, truncation to
// model_max_length (77) keeping the end token, padding with the config's pad token (SD 1.x/2.x and
// SDXL tokenizer: `<|endoftext|>`; SDXL tokenizer_2: `!`).
//
// The work is done by @huggingface/tokenizers, fed the same tokenizer.json definition that
// transformers derives from these two files (its CLIP converter): the special tokens are "added
// tokens", matched in the raw text before normalisation, so a literal `<|endoftext|>` in a caption
// becomes that token, and so does every `!` for a tokenizer whose pad token is `!` (as upstream).
//
//   ClipTokenizer.fromFolder(dir)
//   tokenizer.encode(text): Int32Array [maxLength]
//   tokenizer.encodeBatch(texts): Int32Array [texts.length * maxLength] (row-major)
//   tokenizer.countTokens(text): TokenCount (for the caption editor's truncation warning)
//   tokenizer.tokenize(text): string[] (BPE pieces, without start/end tokens)
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

/** What a caption costs in tokens, against what the text encoder can see. */
export interface TokenCount {
  /** Tokens the text makes, without the start and end tokens. */
  tokens: number;
  /** How many fit: maxLength - 2 (75 for CLIP). */
  capacity: number;
  truncated: boolean;
  /** Tokens beyond `capacity`, dropped by encode(). */
  dropped: number;
}

export interface ClipTokenizerSettings {
  /** Sequence length of every encoding (tokenizer_config.json model_max_length; 77 for CLIP). */
  maxLength: number;
  bosToken: string;
  eosToken: string;
  unkToken: string;
  padToken: string;
}

const DEFAULT_SETTINGS: ClipTokenizerSettings = {
  maxLength: 77,
  bosToken: '<|startoftext|>',
  eosToken: '<|endoftext|>',
  unkToken: '<|endoftext|>',
  padToken: '<|endoftext|>',
};

// CLIP's word split (openai/CLIP simple_tokenizer, as transformers' converter writes it): the two
// special tokens, English contractions, runs of letters, single digits, runs of other non-space
// characters. Applied after lowercasing.
const CLIP_SPLIT_PATTERN =
  "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

export class ClipTokenizer {
  readonly maxLength: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly vocabSize: number;
  private readonly tokenizer: Tokenizer;

  constructor(
    vocab: Record<string, number>,
    merges: [string, string][],
    settings: ClipTokenizerSettings,
    /** Extra added tokens (tokenizer_config.json added_tokens_decoder), id -> content. */
    extraAddedTokens: Map<number, string> = new Map(),
    /** Names the source in error messages. */
    source = 'CLIP tokenizer',
  ) {
    if (settings.maxLength < 2) throw new Error(`${source}: model_max_length ${settings.maxLength} leaves no room for the start and end tokens`);
    const idOf = (token: string, role: string): number => {
      const id = vocab[token];
      if (id === undefined) throw new Error(`${source}: the ${role} token ${JSON.stringify(token)} is not in vocab.json`);
      return id;
    };
    this.maxLength = settings.maxLength;
    this.bosId = idOf(settings.bosToken, 'start (bos)');
    this.eosId = idOf(settings.eosToken, 'end (eos)');
    this.padId = idOf(settings.padToken, 'pad');
    idOf(settings.unkToken, 'unknown (unk)');
    this.vocabSize = Object.keys(vocab).length;

    const added = new Map<number, string>(extraAddedTokens);
    for (const token of [settings.bosToken, settings.eosToken, settings.unkToken, settings.padToken]) added.set(vocab[token]!, token);
    for (const [id, content] of extraAddedTokens)
      if (vocab[content] !== undefined && vocab[content] !== id)
        throw new Error(`${source}: added token ${JSON.stringify(content)} has id ${id} in tokenizer_config.json but ${vocab[content]} in vocab.json`);
    const fullVocab: Record<string, number> = { ...vocab };
    for (const [id, content] of added) fullVocab[content] = id;

    const definition = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: [...added].map(([id, content]) => ({
        id,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
      normalizer: {
        type: 'Sequence',
        normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }],
      },
      pre_tokenizer: {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: CLIP_SPLIT_PATTERN }, behavior: 'Removed', invert: true },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
        ],
      },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: settings.unkToken,
        continuing_subword_prefix: '',
        end_of_word_suffix: '</w>',
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab: fullVocab,
        merges,
      },
    };
    this.tokenizer = new Tokenizer(definition, { model_max_length: settings.maxLength });
  }

  /** Reads `vocab.json`, `merges.txt` and (optional) `tokenizer_config.json` from `dir`. */
  static fromFolder(dir: string): ClipTokenizer {
    const vocabFile = join(dir, 'vocab.json');
    const mergesFile = join(dir, 'merges.txt');
    const configFile = join(dir, 'tokenizer_config.json');
    const vocab = readVocab(vocabFile);
    const merges = readMerges(mergesFile);
    const settings = { ...DEFAULT_SETTINGS };
    const extra = new Map<number, string>();
    if (existsSync(configFile)) {
      const config = readJsonObject(configFile);
      const tokenField = (key: 'bos_token' | 'eos_token' | 'unk_token' | 'pad_token'): string | undefined => {
        const value = config[key];
        if (value === undefined || value === null) return undefined;
        // Older configs write {"__type": "AddedToken", "content": "..."} instead of the string.
        if (typeof value === 'string') return value;
        if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
        throw new Error(`${configFile}: ${key} must be a string or an object with "content", got ${JSON.stringify(value)}`);
      };
      settings.bosToken = tokenField('bos_token') ?? settings.bosToken;
      settings.eosToken = tokenField('eos_token') ?? settings.eosToken;
      settings.unkToken = tokenField('unk_token') ?? settings.unkToken;
      // transformers leaves pad unset when the config has none; diffusers' CLIP configs always set it,
      // and the text encoders were trained with end-token padding, so that is the fallback.
      settings.padToken = tokenField('pad_token') ?? settings.eosToken;
      const maxLength = config.model_max_length;
      // Configs without a real limit write a huge sentinel (1e30); CLIP's position table has 77 rows.
      if (typeof maxLength === 'number' && Number.isInteger(maxLength) && maxLength < 1_000_000) settings.maxLength = maxLength;
      else if (maxLength !== undefined && !(typeof maxLength === 'number' && maxLength >= 1_000_000))
        throw new Error(`${configFile}: model_max_length must be an integer, got ${JSON.stringify(maxLength)}`);
      const decoder = config.added_tokens_decoder;
      if (decoder !== undefined && decoder !== null) {
        if (typeof decoder !== 'object') throw new Error(`${configFile}: added_tokens_decoder must be an object`);
        for (const [idText, entry] of Object.entries(decoder as Record<string, unknown>)) {
          const content = (entry as { content?: unknown } | null)?.content;
          const id = Number(idText);
          if (!Number.isInteger(id) || typeof content !== 'string')
            throw new Error(`${configFile}: added_tokens_decoder entry ${JSON.stringify(idText)} is not {id: {content: string}}`);
          extra.set(id, content);
        }
      }
    }
    return new ClipTokenizer(vocab, merges, settings, extra, dir);
  }

  /** BPE pieces of `text` (no start/end tokens, no truncation). */
  tokenize(text: string): string[] {
    return this.tokenizer.tokenize(withoutFinalSigmaRule(text), { add_special_tokens: false });
  }

  /** Ids of `text` without start/end tokens, untruncated. */
  contentIds(text: string): number[] {
    return this.tokenizer.encode(withoutFinalSigmaRule(text), { add_special_tokens: false }).ids;
  }

  /** [maxLength] ids: start, up to maxLength-2 content tokens, end, then padding. */
  encode(text: string): Int32Array {
    const out = new Int32Array(this.maxLength);
    this.encodeInto(text, out);
    return out;
  }

  /** [texts.length * maxLength] ids, one row per text. */
  encodeBatch(texts: readonly string[]): Int32Array {
    const out = new Int32Array(texts.length * this.maxLength);
    texts.forEach((text, row) => this.encodeInto(text, out.subarray(row * this.maxLength, (row + 1) * this.maxLength)));
    return out;
  }

  countTokens(text: string): TokenCount {
    const tokens = this.contentIds(text).length;
    const capacity = this.maxLength - 2;
    return { tokens, capacity, truncated: tokens > capacity, dropped: Math.max(0, tokens - capacity) };
  }

  private encodeInto(text: string, row: Int32Array): void {
    const content = this.contentIds(text);
    const kept = Math.min(content.length, this.maxLength - 2);
    row.fill(this.padId);
    row[0] = this.bosId;
    for (let i = 0; i < kept; i++) row[1 + i] = content[i]!;
    row[1 + kept] = this.eosId;
  }
}

/**
 * The Rust tokenizer lowercases character by character, so a word-final capital sigma becomes σ,
 * where String.toLowerCase (whole-string, context-aware) gives ς. Σ is the only character whose
 * default lowercase depends on context, so mapping it first makes toLowerCase agree.
 */
function withoutFinalSigmaRule(text: string): string {
  return text.includes('Σ') ? text.replaceAll('Σ', 'σ') : text;
}

function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file}: not valid JSON (${(error as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${file}: not a JSON object`);
  return value as Record<string, unknown>;
}

function readVocab(file: string): Record<string, number> {
  const vocab = readJsonObject(file);
  for (const [token, id] of Object.entries(vocab))
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0)
      throw new Error(`${file}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}, not a non-negative integer`);
  return vocab as Record<string, number>;
}

/** merges.txt: an optional `#version` line, then one merge "left right" per line, best first. */
function readMerges(file: string): [string, string][] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const merges: [string, string][] = [];
  text.split('\n').forEach((rawLine, index) => {
    const line = rawLine.replace(/\r$/, '');
    if (line === '' || (index === 0 && line.startsWith('#version'))) return;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '')
      throw new Error(`${file}: line ${index + 1} is not a merge "left right": ${JSON.stringify(line)}`);
    merges.push([parts[0]!, parts[1]!]);
  });
  return merges;
}
