// Text generation shared by the k6 scripts: short English texts, unique per request when asked.
//
// A unique text starts with five words that spell a number in base 256 (run salt, VU, iteration),
// so no two requests of one run can share a text and no cache can help; filler words follow:
// 0-10 for short texts (5-15 words, a typical review sentence), 18-31 for long ones (25-40 tokens).
// LENGTH=long in the environment picks the long ones. load/bench_texts.py makes the same texts in Python.

export const WORDS = [
  'the', 'movie', 'film', 'story', 'plot', 'actor', 'actress', 'scene', 'ending', 'music',
  'great', 'good', 'bad', 'awful', 'boring', 'brilliant', 'funny', 'sad', 'slow', 'fast',
  'really', 'very', 'quite', 'not', 'never', 'always', 'often', 'rarely', 'truly', 'simply',
  'love', 'hate', 'like', 'enjoy', 'watch', 'see', 'feel', 'think', 'know', 'remember',
  'was', 'is', 'were', 'are', 'had', 'has', 'did', 'does', 'made', 'makes',
  'a', 'an', 'this', 'that', 'these', 'those', 'my', 'your', 'our', 'their',
  'and', 'but', 'or', 'so', 'because', 'while', 'although', 'if', 'when', 'then',
  'director', 'camera', 'script', 'dialogue', 'cast', 'crew', 'budget', 'effects', 'sound', 'light',
  'beautiful', 'ugly', 'clever', 'stupid', 'charming', 'dull', 'exciting', 'tedious', 'moving', 'flat',
  'best', 'worst', 'better', 'worse', 'most', 'least', 'more', 'less', 'much', 'little',
  'time', 'year', 'day', 'night', 'hour', 'minute', 'week', 'month', 'moment', 'season',
  'book', 'show', 'series', 'episode', 'song', 'album', 'game', 'play', 'novel', 'poem',
  'friend', 'family', 'child', 'father', 'mother', 'brother', 'sister', 'hero', 'villain', 'stranger',
  'city', 'house', 'road', 'river', 'sea', 'forest', 'mountain', 'school', 'office', 'garden',
  'happy', 'angry', 'calm', 'tired', 'proud', 'afraid', 'lonely', 'curious', 'bright', 'dark',
  'again', 'still', 'already', 'almost', 'only', 'even', 'just', 'also', 'too', 'enough',
  'run', 'walk', 'talk', 'laugh', 'cry', 'sing', 'dance', 'write', 'read', 'sleep',
  'old', 'new', 'young', 'long', 'short', 'big', 'small', 'hot', 'cold', 'warm',
  'red', 'blue', 'green', 'black', 'white', 'gold', 'silver', 'grey', 'pink', 'brown',
  'first', 'last', 'next', 'every', 'each', 'other', 'same', 'different', 'whole', 'half',
  'cheap', 'expensive', 'free', 'rich', 'poor', 'easy', 'hard', 'simple', 'strange', 'normal',
  'dog', 'cat', 'bird', 'horse', 'fish', 'tree', 'flower', 'stone', 'window', 'door',
  'coffee', 'tea', 'bread', 'water', 'wine', 'dinner', 'lunch', 'breakfast', 'kitchen', 'table',
  'paper', 'letter', 'phone', 'computer', 'picture', 'color', 'voice', 'face', 'hand', 'heart',
  'team', 'class', 'party', 'trip', 'visit', 'question', 'answer', 'problem', 'idea', 'reason',
  'loud', 'quiet', 'soft', 'sharp', 'round', 'square',
];

const ID_WORDS = 5;
const BASE = 256;
const MAX_VUS = 1000;
const MAX_ITERS = 1e6;
export const MAX_SLOTS = 8;

// Words that spell `id` in base 256: one-to-one, so distinct ids give distinct texts.
export function idWords(id) {
  const out = [];
  let rest = id;
  for (let i = 0; i < ID_WORDS; i += 1) {
    out.push(WORDS[rest % BASE]);
    rest = Math.floor(rest / BASE);
  }
  return out;
}

const FILLER = { short: [0, 10], long: [18, 31] };

// The filler range of the LENGTH asked for in the environment (short unless told).
export function fillerRange() {
  const range = FILLER[__ENV.LENGTH || 'short'];
  if (!range) {
    throw new Error(`LENGTH must be one of ${Object.keys(FILLER).join(', ')}`);
  }
  return range;
}

function fillerWords(count) {
  const out = [];
  for (let i = 0; i < count; i += 1) {
    out.push(WORDS[Math.floor(Math.random() * WORDS.length)]);
  }
  return out;
}

// The salt (below 100) keeps two runs against one server from repeating texts;
// with the limits above every id stays below 256^5.
export function runSalt() {
  const fromEnv = __ENV.RUN_SALT;
  return (fromEnv ? Number(fromEnv) : Math.floor(Math.random() * 100)) % 100;
}

// A text that no other (vu, iter, slot) of this run sends, with filler words in `range` (default short).
export function uniqueText(salt, vu, iter, slot, range = FILLER.short) {
  const id = ((salt * MAX_VUS + (vu % MAX_VUS)) * MAX_ITERS + (iter % MAX_ITERS)) * MAX_SLOTS + slot;
  const [low, high] = range;
  const filler = fillerWords(low + Math.floor(Math.random() * (high - low + 1)));
  return idWords(id).concat(filler).join(' ');
}

// True when `body` is a /predict answer with one list of {label, score} per text sent.
// The API a script speaks (env API): mlapi's (and the seed-style server's) POST /predict {"text": [...]}, or
// infinity-emb's POST /classify {"input": [...]}, which answers {"data": [[{label, score}]]}.
const INFINITY = (__ENV.API || 'mlapi') === 'infinity';

export function predictRequest(texts) {
  return INFINITY
    ? { path: '/classify', body: JSON.stringify({ input: texts }) }
    : { path: '/predict', body: JSON.stringify({ text: texts }) };
}

export function isPredictionBody(body, textCount) {
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch (e) {
    return false;
  }
  const rows = parsed && (INFINITY ? parsed.data : parsed.predictions);
  if (!Array.isArray(rows) || rows.length !== textCount) {
    return false;
  }
  return rows.every((row) => Array.isArray(row) && row.length > 0
    && row.every((item) => typeof item.label === 'string' && typeof item.score === 'number'));
}
