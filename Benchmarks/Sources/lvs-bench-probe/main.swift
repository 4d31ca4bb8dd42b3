import DirectorFixtures

// Usage: lvs-bench-probe SCENARIO FLOWS BATCHES
// Processes BATCHES batches of 32 frames; callgrind's instruction totals for
// two batch counts give the instructions per packet (scripts/bench-instructions).
let args = CommandLine.arguments
let kind = Scenario.Kind(rawValue: args.count > 1 ? args[1] : "natEstablished")!
let flows = args.count > 2 ? Int(args[2])! : 1
let batches = args.count > 3 ? Int(args[3])! : 1000
var s = Scenario(kind, flows: flows)
for b in 0..<batches {
    if kind == .newConnectionWLC && b % 16 == 0 { s.reset() }
    s.runBatch(offset: b &* 32)
}
print(s.director.shared.totals.inPackets)
