import LVSConfiguration
import LVSControlProtocol
import LVSDaemon
import LVSSystem

/// The status page: one HTML document with its style and script inline (no
/// external assets; it works offline). It polls `/status.json` every second
/// and redraws the services, real servers, rates, the topology and each
/// forwarding method's packet path.
enum StatusPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>lvsd status</title>
        <style>
          :root { --fg:#1d2330; --muted:#667085; --line:#d0d5dd; --bg:#f7f8fa; --nat:#2e6fdb; --dr:#1a9e62; --tun:#b7791f; --fnat:#9b3fc8; --down:#c0392b; }
          body { font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 0; }
          header { background: #1d2330; color: #fff; padding: 12px 20px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
          header h1 { font-size: 18px; margin: 0; }
          header .kv { color: #cbd2dc; }
          header .kv b { color: #fff; font-variant-numeric: tabular-nums; }
          main { padding: 16px 20px; display: grid; gap: 16px; }
          section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; }
          h2 { font-size: 15px; margin: 0 0 8px; }
          table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
          th, td { text-align: right; padding: 3px 8px; border-bottom: 1px solid #eef0f3; white-space: nowrap; }
          th:first-child, td:first-child, td.l, th.l { text-align: left; }
          tr.service td { font-weight: 600; background: #f2f4f7; }
          tr.server td:first-child { padding-left: 24px; }
          .m-Masq { color: var(--nat); } .m-Route { color: var(--dr); } .m-Tunnel { color: var(--tun); } .m-FullNat { color: var(--fnat); }
          .state-drained { color: var(--down); }
          .paths { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 12px; }
          .paths figure { margin: 0; border: 1px solid #eef0f3; border-radius: 4px; padding: 6px; }
          figcaption { font-weight: 600; margin-bottom: 4px; }
          svg text { font: 11px system-ui, sans-serif; fill: var(--fg); }
          .muted { color: var(--muted); }
          #error { color: var(--down); }
        </style>
        </head>
        <body>
        <header>
          <h1>lvsd</h1>
          <span class="kv">services <b id="n-services">-</b></span>
          <span class="kv">connections <b id="n-conns">-</b></span>
          <span class="kv">conn/s <b id="total-cps">-</b></span>
          <span class="kv">in pkt/s <b id="total-inpps">-</b></span>
          <span class="kv">out pkt/s <b id="total-outpps">-</b></span>
          <span class="kv">in B/s <b id="total-inbps">-</b></span>
          <span class="kv">out B/s <b id="total-outbps">-</b></span>
          <span class="kv">up <b id="uptime">-</b></span>
          <span class="kv">updated <b id="updated">never</b></span>
          <span id="error"></span>
        </header>
        <main>
          <section>
            <h2>Topology</h2>
            <svg id="topology" width="100%" height="120" role="img" aria-label="clients, director and real servers"></svg>
          </section>
          <section>
            <h2>Virtual services and real servers</h2>
            <table>
              <thead><tr><th class="l">Service / real server</th><th class="l">Scheduler / method</th><th>Weight</th><th>Active</th><th>Inactive</th>
                <th>Conns</th><th>CPS</th><th>InPPS</th><th>OutPPS</th><th>InBPS</th><th>OutBPS</th><th class="l">State</th></tr></thead>
              <tbody id="services"><tr><td colspan="12" class="muted">waiting for lvsd…</td></tr></tbody>
            </table>
          </section>
          <section>
            <h2>Packet paths</h2>
            <div class="paths" id="paths"></div>
          </section>
          <section>
            <h2>High availability</h2>
            <table>
              <thead><tr><th class="l">VRRP instance / sync daemon</th><th class="l">Interface</th><th class="l">State</th><th class="l">Master</th><th>Priority</th><th>Since (s)</th><th class="l">Addresses</th></tr></thead>
              <tbody id="ha"></tbody>
            </table>
          </section>
          <section>
            <h2>Workers and drops</h2>
            <table>
              <thead><tr><th class="l">Worker</th><th>In packets</th><th>Out packets</th><th>Drops</th><th>IPv4 entries</th><th>IPv6 entries</th><th>TOA inserted</th></tr></thead>
              <tbody id="workers"></tbody>
            </table>
            <table style="margin-top:8px">
              <thead><tr><th class="l">Drop reason</th><th>Frames</th></tr></thead>
              <tbody id="drops"></tbody>
            </table>
          </section>
        </main>
        <script>
        "use strict";
        const NS = "http://www.w3.org/2000/svg";
        const METHOD = { nat: "Masq", dr: "Route", tunnel: "Tunnel", fullnat: "FullNat", local: "Local" };
        const COLOR = { Masq: "#2e6fdb", Route: "#1a9e62", Tunnel: "#b7791f", FullNat: "#9b3fc8", Local: "#667085" };

        function num(n) {
          if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
          if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
          if (n >= 1e4) return (n / 1e3).toFixed(1) + "K";
          return String(n);
        }
        function el(tag, attrs, text) {
          const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
          for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
          if (text !== undefined) e.textContent = text;
          return e;
        }
        function host(a) { return a.includes(":") ? "[" + a + "]" : a; }
        function serviceName(key) {
          if (key.fwmark !== undefined) return "FWM " + key.fwmark + (key.ipv6 ? " IPv6" : "");
          return key.protocol.toUpperCase() + " " + host(key.address) + ":" + key.port;
        }
        function cell(row, text, cls, attrs) { const td = el("td", Object.assign(cls ? { class: cls } : {}, attrs || {}), text); row.appendChild(td); return td; }
        function rateCells(row, r, stats, id) {
          cell(row, num(stats.connections), "", { "data-conns": stats.connections });
          cell(row, num(r.connectionsPerSecond), "rate-cps");
          cell(row, num(r.inPacketsPerSecond), "rate-inpps", { "data-inpps": r.inPacketsPerSecond, "data-id": id });
          cell(row, num(r.outPacketsPerSecond), "rate-outpps");
          cell(row, num(r.inBytesPerSecond), "rate-inbps");
          cell(row, num(r.outBytesPerSecond), "rate-outbps");
        }

        function drawServices(report) {
          const body = document.getElementById("services");
          body.replaceChildren();
          const health = {};
          for (const h of report.table.health || []) health[serviceName(h.service) + " " + host(h.address) + ":" + h.port] = h;
          for (const s of report.table.services) {
            const name = serviceName(s.service.key);
            const row = el("tr", { class: "service", "data-service": name });
            cell(row, name);
            let sched = s.service.scheduler;
            if (s.service.persistence) sched += " persistent " + s.service.persistence;
            cell(row, sched, "l");
            cell(row, ""); cell(row, String(s.servers.reduce((a, d) => a + d.activeConnections, 0)));
            cell(row, String(s.servers.reduce((a, d) => a + d.inactiveConnections, 0)));
            rateCells(row, s.rates, s.stats, name);
            cell(row, s.localAddresses.length ? "LIP " + s.localAddresses.join(", ") : "", "l");
            body.appendChild(row);
            for (const h of (report.table.health || []).filter(h => serviceName(h.service) === name && !h.up)) {
              if (s.servers.some(d => d.server.address === h.address && d.server.port === h.port)) continue;
              const r = el("tr", { class: "server", "data-server": host(h.address) + ":" + h.port });
              cell(r, host(h.address) + ":" + h.port);
              cell(r, "out", "l state-drained");
              for (let k = 0; k < 9; k++) cell(r, "");
              cell(r, "down: " + h.detail + " (" + h.checks.join(", ") + ")", "l state-drained");
              body.appendChild(r);
            }
            for (const d of s.servers) {
              const method = METHOD[d.server.method] || d.server.method;
              const r = el("tr", { class: "server", "data-server": host(d.server.address) + ":" + d.server.port });
              cell(r, host(d.server.address) + ":" + d.server.port);
              cell(r, method, "l m-" + method);
              cell(r, String(d.server.weight));
              cell(r, String(d.activeConnections));
              cell(r, String(d.inactiveConnections));
              rateCells(r, d.rates, d.stats, name + " " + d.server.address);
              const h = health[name + " " + host(d.server.address) + ":" + d.server.port];
              const drained = d.server.weight === 0;
              let state = drained ? "weight 0: no new connections" : "in rotation";
              if (h) state = (h.up ? "up" : "down: " + h.detail) + " (" + h.checks.join(", ") + ")" + (drained ? ", weight 0" : "");
              cell(r, state, "l" + (drained || (h && !h.up) ? " state-drained" : ""));
              body.appendChild(r);
            }
          }
          if (!report.table.services.length) body.appendChild(el("tr", {}, "")).appendChild(el("td", { colspan: 12, class: "muted" }, "no virtual services"));
        }

        function drawTopology(report) {
          const svg = document.getElementById("topology");
          svg.replaceChildren();
          const servers = [];
          for (const s of report.table.services) for (const d of s.servers) {
            const key = host(d.server.address) + ":" + d.server.port;
            if (!servers.find(x => x.key === key)) servers.push({ key, method: METHOD[d.server.method] || d.server.method, weight: d.server.weight });
          }
          const rowH = 22, height = Math.max(110, servers.length * rowH + 20);
          svg.setAttribute("height", height);
          const mid = height / 2;
          svg.appendChild(el("svg:rect", { x: 10, y: mid - 20, width: 110, height: 40, rx: 20, fill: "#eef2f8", stroke: "#98a2b3" }));
          svg.appendChild(el("svg:text", { x: 65, y: mid + 4, "text-anchor": "middle" }, "clients"));
          svg.appendChild(el("svg:rect", { x: 220, y: mid - 32, width: 200, height: 64, rx: 6, fill: "#1d2330" }));
          const vips = report.table.services.map(s => serviceName(s.service.key));
          const t = el("svg:text", { x: 320, y: mid - 12, "text-anchor": "middle", style: "fill:#fff;font-weight:600" }, "lvsd director");
          svg.appendChild(t);
          vips.slice(0, 3).forEach((v, i) => svg.appendChild(el("svg:text", { x: 320, y: mid + 6 + i * 12, "text-anchor": "middle", style: "fill:#cbd2dc" }, v)));
          svg.appendChild(el("svg:line", { x1: 120, y1: mid, x2: 220, y2: mid, stroke: "#98a2b3", "stroke-width": 2 }));
          servers.forEach((s, i) => {
            const y = 10 + i * rowH + rowH / 2;
            svg.appendChild(el("svg:line", { x1: 420, y1: mid, x2: 560, y2: y, stroke: COLOR[s.method] || "#98a2b3", "stroke-width": 2,
                                             "stroke-dasharray": s.weight === 0 ? "4 4" : "" }));
            svg.appendChild(el("svg:rect", { x: 560, y: y - 9, width: 190, height: 18, rx: 3, fill: "#fff", stroke: COLOR[s.method] || "#98a2b3" }));
            svg.appendChild(el("svg:text", { x: 568, y: y + 4 }, s.key + "  " + s.method + (s.weight === 0 ? " (w 0)" : "")));
          });
        }

        // Each method's hops as the seed's diagrams draw them: who sends to whom,
        // and the addresses the packet carries on that hop.
        function drawPaths(report) {
          const box = document.getElementById("paths");
          box.replaceChildren();
          const example = {};
          for (const s of report.table.services) for (const d of s.servers) {
            const m = METHOD[d.server.method];
            if (!example[m] && s.service.key.address) example[m] = { vip: s.service.key.address, port: s.service.key.port, rip: d.server.address,
                                                                     rport: d.server.port || s.service.key.port, lip: s.localAddresses[0] };
          }
          const paths = {
            Masq: e => [["client", "lvsd", `CIP → ${e.vip}:${e.port}`], ["lvsd", "real", `CIP → ${e.rip}:${e.rport}`],
                        ["real", "lvsd", `${e.rip}:${e.rport} → CIP`], ["lvsd", "client", `${e.vip}:${e.port} → CIP`]],
            Route: e => [["client", "lvsd", `CIP → ${e.vip}:${e.port}`], ["lvsd", "real", `same packet, MAC of ${e.rip}`],
                         ["real", "client", `${e.vip}:${e.port} → CIP (direct)`]],
            Tunnel: e => [["client", "lvsd", `CIP → ${e.vip}:${e.port}`], ["lvsd", "real", `DIP → ${e.rip} [CIP → ${e.vip}]`],
                          ["real", "client", `${e.vip}:${e.port} → CIP (direct)`]],
            FullNat: e => [["client", "lvsd", `CIP → ${e.vip}:${e.port}`], ["lvsd", "real", `${e.lip || "LIP"} → ${e.rip}:${e.rport} +TOA(CIP)`],
                           ["real", "lvsd", `${e.rip}:${e.rport} → ${e.lip || "LIP"}`], ["lvsd", "client", `${e.vip}:${e.port} → CIP`]],
          };
          for (const m of ["Masq", "Route", "Tunnel", "FullNat"]) {
            const e = example[m] || { vip: "VIP", port: "port", rip: "RIP", rport: "port", lip: "LIP" };
            const fig = el("figure", { "data-method": m });
            fig.appendChild(el("figcaption", { class: "m-" + m }, { Masq: "NAT", Route: "DR", Tunnel: "TUN", FullNat: "FULLNAT" }[m] + (example[m] ? "" : " (not in use)")));
            const svg = el("svg:svg", { width: "100%", viewBox: "0 0 420 150" });
            const x = { client: 36, lvsd: 200, real: 370 };
            for (const [k, label] of [["client", "client"], ["lvsd", "lvsd"], ["real", "real server"]]) {
              svg.appendChild(el("svg:line", { x1: x[k], y1: 18, x2: x[k], y2: 145, stroke: "#d0d5dd" }));
              svg.appendChild(el("svg:text", { x: x[k], y: 12, "text-anchor": "middle", style: "font-weight:600" }, label));
            }
            paths[m](e).forEach(([from, to, label], i) => {
              const y = 36 + i * 30;
              svg.appendChild(el("svg:line", { x1: x[from], y1: y, x2: x[to], y2: y, stroke: COLOR[m], "stroke-width": 2, "marker-end": "url(#arrow-" + m + ")" }));
              svg.appendChild(el("svg:text", { x: (x[from] + x[to]) / 2, y: y - 5, "text-anchor": "middle" }, label));
            });
            const defs = el("svg:defs");
            const marker = el("svg:marker", { id: "arrow-" + m, markerWidth: 8, markerHeight: 8, refX: 7, refY: 4, orient: "auto", markerUnits: "userSpaceOnUse" });
            marker.appendChild(el("svg:path", { d: "M0,0 L8,4 L0,8 z", fill: COLOR[m] }));
            defs.appendChild(marker);
            svg.appendChild(defs);
            fig.appendChild(svg);
            box.appendChild(fig);
          }
        }

        function drawHA(report) {
          const body = document.getElementById("ha");
          body.replaceChildren();
          for (const v of report.table.vrrp || []) {
            const r = el("tr");
            cell(r, v.name + " (vrid " + v.virtualRouterID + ")"); cell(r, v.interface); cell(r, v.state); cell(r, v.master || "");
            cell(r, String(v.priority)); cell(r, num(v.seconds)); cell(r, v.addresses.join(" "));
            body.appendChild(r);
          }
          const s = report.sync;
          for (const d of report.table.daemons || []) {
            const r = el("tr");
            const moved = d.role === "master" ? num(s.recordsSent) + " sent, " + num(s.recordsLost) + " lost"
                                              : num(s.recordsApplied) + " applied, " + num(s.recordsRejected) + " rejected";
            cell(r, d.role + " sync daemon (syncid " + d.syncID + ")"); cell(r, d.interface); cell(r, "running"); cell(r, "");
            cell(r, ""); cell(r, ""); cell(r, d.group + ":" + d.port + ", " + moved);
            body.appendChild(r);
          }
          for (const b of report.table.bgp || []) {
            const r = el("tr");
            cell(r, "BGP route " + b.address); cell(r, ""); cell(r, b.announced ? "ANNOUNCED" : "WITHDRAWN"); cell(r, b.reason);
            cell(r, ""); cell(r, num(b.seconds)); cell(r, b.address);
            body.appendChild(r);
          }
          if (!body.children.length) body.appendChild(el("tr")).appendChild(el("td", { colspan: 7, class: "muted" }, "no VRRP instance, no sync daemon, no BGP"));
        }

        function drawWorkers(report) {
          const body = document.getElementById("workers");
          body.replaceChildren();
          for (const w of report.engines) {
            const r = el("tr");
            cell(r, String(w.worker)); cell(r, num(w.totals.inPackets)); cell(r, num(w.totals.outPackets)); cell(r, num(w.drops));
            cell(r, w.ipv4Connections + " / " + num(w.ipv4Capacity)); cell(r, w.ipv6Connections + " / " + num(w.ipv6Capacity)); cell(r, num(w.toaInserted));
            body.appendChild(r);
          }
          const drops = document.getElementById("drops");
          drops.replaceChildren();
          const reasons = Object.entries(report.table.drops).sort((a, b) => b[1] - a[1]);
          for (const [reason, n] of reasons) { const r = el("tr"); cell(r, reason); cell(r, num(n)); drops.appendChild(r); }
          if (!reasons.length) drops.appendChild(el("tr")).appendChild(el("td", { colspan: 2, class: "muted" }, "none"));
        }

        function draw(report) {
          const t = report.totalRates;
          document.getElementById("n-services").textContent = report.table.services.length;
          document.getElementById("n-conns").textContent = num(report.totals.connections);
          for (const [id, v] of [["total-cps", t.connectionsPerSecond], ["total-inpps", t.inPacketsPerSecond], ["total-outpps", t.outPacketsPerSecond],
                                 ["total-inbps", t.inBytesPerSecond], ["total-outbps", t.outBytesPerSecond]]) {
            const e = document.getElementById(id);
            e.textContent = num(v);
            e.dataset.value = v;
          }
          const u = report.uptimeSeconds;
          document.getElementById("uptime").textContent = Math.floor(u / 3600) + "h " + Math.floor(u / 60) % 60 + "m " + u % 60 + "s";
          document.getElementById("updated").textContent = new Date().toLocaleTimeString();
          drawServices(report);
          drawTopology(report);
          drawPaths(report);
          drawHA(report);
          drawWorkers(report);
        }

        let polls = 0;
        async function poll() {
          try {
            const r = await fetch("status.json", { cache: "no-store" });
            if (!r.ok) throw new Error("HTTP " + r.status);
            draw(await r.json());
            document.getElementById("error").textContent = "";
            document.body.dataset.polls = ++polls;
          } catch (e) {
            document.getElementById("error").textContent = "lvsd unreachable: " + e.message;
          }
          setTimeout(poll, 1000);
        }
        poll();
        </script>
        </body>
        </html>
        """#
}
