import DirectorFixtures

// Usage: lvs-bench-probe SCENARIO FLOWS BATCHES
// Processes BATCHES batches of 32 frames; callgrind's instruction totals for
// two batch counts give the instructions per packet (scripts/bench-instructions).
func probe(_ kind: Scenario.Kind, flows: Int, batches: Int) -> UInt64 {
    let s = Scenario(kind, flows: flows)
    for b in 0..<batches {
        if kind == .newConnectionWLC && b % 16 == 0 { s.reset() }
        s.runBatch(offset: b &* 32)
    }
    return s.director.shared.totals.inPackets
}

let args = CommandLine.arguments
let kind = Scenario.Kind(rawValue: args.count > 1 ? args[1] : "natEstablished")!
print(probe(kind, flows: args.count > 2 ? Int(args[2])! : 1, batches: args.count > 3 ? Int(args[3])! : 1000))
