// The Worker's ES-module entry: hands the runtime's fetch to the glue that
// `wasm-bindgen --target module` generates from epochgate-worker (the Rust code decides
// everything; see worker/src/js.rs), and declares the relay's Durable Object class, whose
// fetch and alarm are the glue's too (worker/src/relay.rs). Copied next to the generated
// files by `make build-worker`.
import {
  fetch as epochgateFetch,
  relay_fetch as relayFetch,
  relay_alarm as relayAlarm,
} from "./epochgate_worker.js";

export default {
  async fetch(request, env, ctx) {
    return epochgateFetch(request, env, ctx);
  },
};

// One per deployment (`EPOCHGATE_RELAY.idFromName(deployment)`): holds the long poll to
// the control plane and tells the deployment's isolates what is current.
export class EpochgateRelay {
  constructor(state, env) {
    this.state = state;
    this.env = env;
  }

  async fetch(request) {
    return relayFetch(request, this.env, this.state);
  }

  async alarm() {
    return relayAlarm(this.env, this.state);
  }
}
