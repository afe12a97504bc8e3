// AudioWorklet of the rnnlab page: microphone samples -> 16 kHz mono Int16 frames (~200 ms) posted to the page.
//
// Downsampling averages the input samples that fall in each output sample's interval (a box filter: a simple
// low-pass before decimation). processorOptions: {targetRate: 16000, frameMs: 200}. The page posts "flush" to
// get the last partial frame, answered by the message "flushed".

class PcmWorklet extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.target = Math.min(opts.targetRate || 16000, sampleRate);
    this.step = sampleRate / this.target; // input samples per output sample (>= 1)
    this.frame = Math.max(1, Math.round((this.target * (opts.frameMs || 200)) / 1000));
    this.out = new Int16Array(this.frame);
    this.n = 0;
    this.phase = 0; // input samples since the last output sample
    this.sum = 0;
    this.count = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  push(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.n++] = v < 0 ? v * 32768 : v * 32767;
    if (this.n === this.frame) {
      this.port.postMessage(this.out.buffer, [this.out.buffer]);
      this.out = new Int16Array(this.frame);
      this.n = 0;
    }
  }

  flush() {
    if (this.n > 0) {
      const rest = this.out.slice(0, this.n);
      this.port.postMessage(rest.buffer, [rest.buffer]);
      this.n = 0;
    }
    this.port.postMessage("flushed");
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const length = input[0].length;
    for (let i = 0; i < length; i++) {
      let s = 0;
      for (let c = 0; c < channels; c++) s += input[c][i];
      this.sum += s / channels;
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.step) {
        this.phase -= this.step;
        this.push(this.sum / this.count);
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-worklet", PcmWorklet);
