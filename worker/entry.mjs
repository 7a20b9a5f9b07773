// The Worker's ES-module entry: hands the runtime's fetch to the glue that
// `wasm-bindgen --target module` generates from epochgate-worker (the Rust code decides
// everything; see worker/src/js.rs). Copied next to the generated files by
// `make build-worker`.
import { fetch as epochgateFetch } from "./epochgate_worker.js";

export default {
  async fetch(request, env, ctx) {
    return epochgateFetch(request, env, ctx);
  },
};
