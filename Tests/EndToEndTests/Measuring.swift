import Foundation

/// Milliseconds until `condition` holds (checked every `every` seconds), or nil after `limit` seconds.
func waitFor(limit: Double, every: Double = 0.05, _ condition: () -> Bool) -> Int? {
    let start = Date()
    while Date().timeIntervalSince(start) < limit {
        if condition() { return Int(Date().timeIntervalSince(start) * 1000) }
        usleep(useconds_t(every * 1_000_000))
    }
    return nil
}

/// Longest stretch without data in an iperf3 `--json` run of 0.1 s
/// intervals (ms), and the bits per second of its last second.
func interruption(_ json: String) -> (gap: Int, lastSecond: Double)? {
    guard let start = json.firstIndex(of: "{"),
        let o = try? JSONSerialization.jsonObject(with: Data(json[start...].utf8)) as? [String: Any],
        let intervals = o["intervals"] as? [[String: Any]]
    else { return nil }
    let rates = intervals.compactMap { ($0["sum"] as? [String: Any])?["bits_per_second"] as? Double }
    var gap = 0
    var run = 0
    for r in rates {
        run = r < 1_000_000 ? run + 1 : 0
        gap = max(gap, run)
    }
    let last = rates.suffix(10)
    return (gap * 100, last.reduce(0, +) / Double(max(1, last.count)))
}
