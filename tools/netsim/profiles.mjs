// Named impairment profiles for the subscriber's link. Loss is applied both ways, delay
// and jitter each way (so RTT is about twice the delay), rate caps on the downlink.
export const PROFILES = {
  clean: {},
  'lossy-10': { loss: 0.1 },
  'lossy-20': { loss: 0.2 },
  'lossy-30': { loss: 0.3 },
  // Gilbert-Elliott: bursts of 50% loss; about 8% on average.
  'burst-loss': { burst: { lossBad: 0.5, enterBad: 0.02, leaveBad: 0.1 } },
  // ~180 ms RTT with 20 ms of jitter and 2% loss.
  intercontinental: { delayMs: 90, jitterMs: 10, loss: 0.02 },
  // 60 ms RTT, 40 ms jitter, 5% loss, 1.5 Mbps.
  '4g-congested': { delayMs: 30, jitterMs: 20, loss: 0.05, rateKbps: 1500 },
  'cap-300k': { rateKbps: 300 },
  // 3 Mbps that drops to 250 kbps for 10 s, then recovers.
  'wifi-flap': { rateKbps: 3000, flap: { atS: 5, kbps: 250, forS: 10 } },
};
