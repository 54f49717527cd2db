using System.Text.Json;

namespace UVm.Benchmarks;

/// <summary>
/// <c>UVm.Benchmarks --smoke [--peers FILE]</c>: checks the harness, not the speed. Parses peer
/// lines, runs one UVm scenario (fault round trip through a registered handler) at a tiny
/// size, and checks that its row renders as a well-formed table line and JSON object; runs the
/// areas and snapshot scenarios at a tiny size (their own count and content checks). No timing is asserted. Ends with exactly one line <c>bench-smoke: N passed, N failed, 0 skipped</c>.
/// </summary>
internal static class Smoke
{
    private const ulong Pages = 64;

    public static int Run(Settings s, PeerResults givenPeers)
    {
        int passed = 0, failed = 0, skipped = 0;
        void Check(string name, Action test)
        {
            try
            {
                test();
                passed++;
                Console.WriteLine($"ok     {name}");
            }
            catch (Exception e)
            {
                failed++;
                Console.WriteLine($"FAILED {name}: {e.GetType().Name}: {e.Message}");
            }
        }

        foreach ((string scenario, string why) in givenPeers.Unavailable.OrderBy(u => u.Scenario, StringComparer.Ordinal))
        {
            skipped++;
            Console.WriteLine($"skip   peer {scenario}: {why}");
        }

        // The peers of this run if given (and they include the raw fault peer), else lines in the peers' format.
        PeerResults peers = givenPeers.Get("fault_roundtrip_raw", "ns_per_fault") != null ? givenPeers : SamplePeers();
        Row? row = null;
        var rows = new List<Row>();

        Check("peer lines parse, malformed lines are refused", () =>
        {
            PeerResults p = SamplePeers();
            Require(p.Get("fault_roundtrip_raw", "ns_per_fault") is { Median: 27490.5, Reps: 3 } f && f.Number("pages") == 4096, "figure, reps and extras read back");
            Require(p.Get("fault_roundtrip_uffd", "ns_per_fault") is null && p.Missing("fault_roundtrip_uffd").Contains("errno=1"), "an unavailable peer has no figure and says why");
            Require(p.Missing("fault_roundtrip_libsigsegv").Contains("libsigsegv-dev is not installed; to measure this peer: apt-get install libsigsegv-dev"),
                "a peer whose library is not installed says how to install it");
            Require(Throws<FormatException>(() => new PeerResults().Add("PEER fault_roundtrip_raw ns_per_fault fast reps=3")), "a malformed PEER line throws");
            Require(Throws<FormatException>(() => p.Get("fault_roundtrip_raw", "GB_per_s")), "a unit mismatch throws");
            Require(!new PeerResults().Add("peers: cc fault_raw"), "other lines are ignored");
        });

        Check(Program.Inv($"fault round trip through a registered handler, {Pages} pages, {s.Reps} repetitions"), () =>
        {
            Samples samples = FaultBenchmarks.HandlerRoundTrip(Pages, s.Warmups, s.Reps);
            Require(samples.Count == s.Reps, $"{s.Reps} samples");
            Require(samples.Values.All(v => double.IsFinite(v) && v > 0), "every sample is a positive time");
            PeerFigure? raw = peers.Get("fault_roundtrip_raw", "ns_per_fault");
            row = new Row("fault round trip, registered handler", "ns/fault", Better.Lower, "raw C SIGSEGV+mmap (fault_roundtrip_raw)",
                raw?.Median, samples.Median, Target.RatioAtMost(1.3), samples.Count, raw?.Reps, "smoke");
            rows.Add(row);
        });

        Check("the row renders as one well-formed table line", () =>
        {
            Require(row != null, "the scenario produced a row");
            string[] cells = Report.Cells(row!);
            Require(cells.Length == Report.Columns.Length, "one cell per column");
            Require(cells.All(c => c.Length > 0 && !c.Contains('|') && !c.Contains('\n')), "no empty cell, no pipe, no newline");
            Require(Report.Verdicts.Contains(row!.Met) && row.Met is "yes" or "NO", $"verdict '{row.Met}' is yes or NO");
            Require(row.Ratio is { } r && double.IsFinite(r) && r > 0, "UVm ÷ peer is a positive number");
            string md = new Report(rows, "smoke").Markdown();
            string[] table = md.Split('\n').Where(l => l.StartsWith('|')).ToArray();
            Require(table.Length == 3, "header, rule and one row");
            Require(table.All(l => l.Count(ch => ch == '|') == Report.Columns.Length + 1), "every table line has every column");
        });

        Check("areas scenarios at a tiny size: their counts and contents check, their pools end empty", () =>
        {
            AreaBenchmarks.FirstTouch t = AreaBenchmarks.MeasureFirstTouch(64, 1, 1);
            Require(t.Samples.Count == 1 && t.Faults == 64 / t.FaultAround && t.Pages == 64, "first touch: one fault per fault-around window");
            AreaBenchmarks.ForkCost f = AreaBenchmarks.MeasureFork(2UL << 20, 1, 1, rewriteParent: true);
            Require(f.Fork.Count == 1 && f.Dispose.Count == 1 && f.ForkAndDispose.Count == 1, "fork: one sample of each part");
            AreaBenchmarks.CowWrite c = AreaBenchmarks.MeasureCowWrite(64, 1, 1);
            Require(c.Total.Count == 1 && c.Copies == 64 / 16, "write after fork: one copy-on-write fault per 16-page window");
            AreaBenchmarks.HostMappings h = AreaBenchmarks.MeasureHostMappings(512, seed: 1);
            Require(h.Failure is null && h.Child.Copies >= 256 && h.Child.Copies <= 512 && h.Child.Copies % 16 == 0 && h.Max > 0,
                "host mappings: the child's writes to half of the pages copied whole windows");
        });

        Check("snapshot scenarios at a tiny size: resets restore what was written, WrittenPages lists exactly it, pools end empty", () =>
        {
            const int writes = 100;
            // A 4 MiB area (1,024 pages) in an 8 MiB space: every reset configuration, instances, the listing, the memory figures.
            SnapshotBenchmarks.Big b = SnapshotBenchmarks.MeasureBig(4UL << 20, 1, 1, writes, instances: 2);
            Require(b.Resets.Count == SnapshotBenchmarks.BigConfigs.Length && b.Resets.All(r => r.Run.Count == 1 && r.Reset.Count == 1 && r.WritesUs.Count == 1),
                "one sample of every reset configuration (each checked: the written pages read the snapshot's contents again, no frame left)");
            SnapshotBenchmarks.ResetCost r1 = b.Resets.Single(r => r.Config is { Pattern: SnapshotBenchmarks.Pattern.Random, FaultAround: 1 });
            if (UVm.Host.HostCopies.Supported)
            {
                // Host copies: the kernel copies each page on its first write, UVm takes no fault; the reset finds the copies.
                Require(r1.Compared == writes && b.Resets.All(r => r.Compared == writes && r.CowPages == 0 && r.CowFaults == 0),
                    "host copies: no copy of UVm's, and every reset compares exactly the pages written (the copies the host made)");
            }
            else
            {
                Require(r1.Compared == writes && r1.CowPages == writes && r1.CowFaults == writes, "fault-around 1: one copy per page written, and the reset compares exactly those");
                Require(b.Resets.All(r => r.Compared >= writes && r.CowPages >= writes), "every configuration copies and compares at least the pages written");
            }
            Require(b.Instantiate.Count == 1 && b.Listing.Count == 1, "one instantiation and one WrittenPages sample (the listing checked equal to the pages written)");
            Require(b.FramesWithInstances == (long)b.Pages && b.AllBytes > b.SnapshotBytes && b.OneCopyBytes > 0, "instances copy no frame; the memory figures are counted");
            SnapshotBenchmarks.ResetCost small = SnapshotBenchmarks.MeasureResets(16UL << 20, 14UL << 20, 1, 1, writes,
                [new(SnapshotBenchmarks.Pattern.Random, 1)]).Single();
            Require(small.Compared == writes, "in a 16 MiB space too, the reset compares exactly the pages written");
            SnapshotBenchmarks.WatchFault w = SnapshotBenchmarks.MeasureWatchFault(64, 1, 1);
            Require(w.Samples.Count == 1 && w.Faults == 64, "the first write to each watched page faults once");
            var draw = new SnapshotBenchmarks.PageDraw(SnapshotBenchmarks.PageDraw.Seed);
            ulong[] random = draw.Random(1024, writes), clustered = draw.Clustered(1024, writes);
            Require(random.Distinct().Count() == writes && random.All(p => p < 1024), "random pages are distinct and in range");
            Require(clustered.Zip(clustered.Skip(1)).All(p => p.Second == p.First + 1) && clustered[^1] < 1024, "clustered pages are consecutive and in range");
        });

        Check("latest.md and latest.json are written and read back", () =>
        {
            string dir = Path.Combine(Path.GetTempPath(), $"uvm-bench-smoke-{Environment.ProcessId}");
            try
            {
                new Report(rows, "smoke").Write(dir);
                Require(File.ReadAllText(Path.Combine(dir, "latest.md")).Contains("| fault round trip, registered handler"), "the Markdown holds the row");
                using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "latest.json")));
                Require(doc.RootElement.ValueKind == JsonValueKind.Array && doc.RootElement.GetArrayLength() == rows.Count, "an array of every row");
                foreach (JsonElement o in doc.RootElement.EnumerateArray())
                {
                    foreach (string key in new[] { "scenario", "unit", "target", "met" })
                        Require(o.GetProperty(key).ValueKind == JsonValueKind.String, $"'{key}' is a string");
                    foreach (string key in new[] { "uvm", "peer", "ratio", "reps" })
                        Require(o.GetProperty(key).ValueKind is JsonValueKind.Number or JsonValueKind.Null, $"'{key}' is a number or null");
                    Require(Report.Verdicts.Contains(o.GetProperty("met").GetString()), "'met' is a known verdict");
                }
                JsonElement first = doc.RootElement[0];
                Require(first.GetProperty("uvm").ValueKind == JsonValueKind.Number && first.GetProperty("reps").GetInt32() == s.Reps, "the measured row has its figure and reps");
            }
            finally
            {
                if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            }
        });

        Console.WriteLine($"bench-smoke: {passed} passed, {failed} failed, {skipped} skipped");
        return failed == 0 ? 0 : 1;
    }

    private static PeerResults SamplePeers()
    {
        var p = new PeerResults();
        foreach (string line in new[]
                 {
                     "PEER fault_roundtrip_raw ns_per_fault 27490.5 reps=3 pages=4096",
                     "PEER fault_roundtrip_uffd unavailable 0 reps=0 errno=1",
                     "PEER fault_roundtrip_libsigsegv unavailable 0 reps=0 not_installed=libsigsegv-dev",
                     "PEER first_touch_kernel ns_per_page 9927.1 reps=3 pages=4096 thp=off",
                     "PEER fork_kernel us_per_fork 3420.8 reps=3 resident_mib=64 fork_call_us=725.5",
                     "PEER fork_cow_write_kernel ns_per_page 14602.5 reps=3 pages=4096 fork_call_us=707.2",
                 })
            p.Add(line);
        return p;
    }

    private static void Require(bool condition, string what)
    {
        if (!condition) throw new InvalidOperationException($"expected: {what}");
    }

    private static bool Throws<T>(Action a) where T : Exception
    {
        try
        {
            a();
            return false;
        }
        catch (T)
        {
            return true;
        }
    }
}
