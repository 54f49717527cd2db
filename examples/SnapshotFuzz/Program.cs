// Snapshot fuzzing: a toy guest (byte code in a read-only area, an input page, a heap, a stack)
// is built once, frozen into a snapshot, then run thousands of times on random inputs. After
// each run the address space is reset to the snapshot in place: the cost follows the pages the
// run dirtied, not the size of the guest. The write watch lists those pages exactly; we check
// them against what the program must have written, check every crash against the bugs planted
// in it, and check at the end that the guest reads back exactly as it was snapshotted.
//
//   dotnet run --project examples/SnapshotFuzz -- [runs (default 5000)] [seed (default 1)]
using System.Diagnostics;
using SnapshotFuzz;
using UVm;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

const ulong Page = Paging.PageSize;
int runs = args.Length > 0 ? int.Parse(args[0]) : 5000;
int seed = args.Length > 1 ? int.Parse(args[1]) : 1;
if (runs < 1) throw new ArgumentOutOfRangeException(nameof(args), "the run count must be at least 1");
int failures = 0;

using var pool = new FramePool(64UL << 20);
var space = new AddressSpace(new VmSpaceOptions { Size = GuestLayout.SpaceSize, Pool = pool });
space.Space.Activate();
byte[] code = GuestLayout.Program();
GuestLayout.Build(space, code);
var guest = VaddrRange.FromLength(GuestLayout.Code, GuestLayout.StackTop - GuestLayout.Code); // every area of the guest
byte[] heapBefore = ReadAll(space, GuestLayout.Heap, GuestLayout.HeapPages * Page);
// The watch starts before the snapshot: a watched space sees every first write (it makes its
// copies itself, not the host), so the snapshot is taken in that mode from the start.
space.ResetWriteWatch(guest);
VmSnapshot snapshot = space.Snapshot();
Console.WriteLine($"UVm snapshot fuzz: a byte-code guest of {code.Length} bytes in a read-only area at 0x{GuestLayout.Code:x}, " +
    $"a heap of {GuestLayout.HeapPages} pages at 0x{GuestLayout.Heap:x}, a stack of {GuestLayout.StackPages} pages at 0x{GuestLayout.Stack:x}.");
Console.WriteLine($"Snapshot taken: {snapshot.Areas.Count} areas, {ResidentPages(space)} resident pages shared copy-on-write, " +
    $"its page table {snapshot.PageTableBytes} bytes. {runs} runs, seed {seed}.\n");

var random = new Random(seed);
var interpreter = new Interpreter(space.Space);
var input = new byte[GuestLayout.InputBytes];
int halted = 0, wildStores = 0, codeWrites = 0, otherEnds = 0, unpredicted = 0, dirtyMismatches = 0, resetMismatches = 0;
long dirtyTotal = 0, comparedTotal = 0, guestTicks = 0, resetTicks = 0, watchTicks = 0;
int dirtyMin = int.MaxValue, dirtyMax = 0, comparedMax = 0;
var shown = new List<string>();
var clock = Stopwatch.StartNew();
for (int run = 0; run < runs; run++)
{
    random.NextBytes(input);
    int length = random.Next(GuestLayout.InputBytes + 1);
    long t0 = Stopwatch.GetTimestamp();
    GuestLayout.WriteInput(space, input, length);
    RunResult result = interpreter.Run();
    long t1 = Stopwatch.GetTimestamp();
    guestTicks += t1 - t0;

    // What the program must have done with this input: the oracle is plain C#, no guest memory.
    (RunOutcome expectedEnd, ulong expectedFault, SortedSet<ulong> expectedPages) = Predict(input, length);
    string kind = Classify(result);
    switch (kind)
    {
        case "halt": halted++; break;
        case "wild store": wildStores++; break;
        case "write to code": codeWrites++; break;
        default: otherEnds++; break;
    }
    if (result.Outcome != expectedEnd || (result.Outcome == RunOutcome.Fault && result.Fault?.Address != expectedFault))
    {
        unpredicted++;
        if (unpredicted <= 3) Console.WriteLine($"  UNEXPECTED run {run}: {result}; expected {expectedEnd} at 0x{expectedFault:x}");
    }
    if (result.Outcome == RunOutcome.Fault && shown.Count < 3) shown.Add($"  run {run}: {kind}: {result}");

    long t2 = Stopwatch.GetTimestamp();
    IReadOnlyList<ulong> written = space.WrittenPages(guest);
    if (!written.SequenceEqual(expectedPages))
    {
        dirtyMismatches++;
        if (dirtyMismatches <= 3)
            Console.WriteLine($"  DIRTY PAGES DIFFER in run {run}: written {Hex(written)}, expected {Hex(expectedPages)}");
    }
    long t3 = Stopwatch.GetTimestamp();
    int compared = space.Reset(snapshot);
    long t4 = Stopwatch.GetTimestamp();
    resetTicks += t4 - t3;
    if (compared != written.Count)
    {
        resetMismatches++;
        if (resetMismatches <= 3) Console.WriteLine($"  RESET COMPARED {compared} pages in run {run}, the run wrote {written.Count}");
    }
    space.ResetWriteWatch(guest);
    watchTicks += Stopwatch.GetTimestamp() - t4 + (t3 - t2);
    dirtyTotal += written.Count;
    comparedTotal += compared;
    dirtyMin = Math.Min(dirtyMin, written.Count);
    dirtyMax = Math.Max(dirtyMax, written.Count);
    comparedMax = Math.Max(comparedMax, compared);
}
clock.Stop();
int crashes = wildStores + codeWrites + otherEnds;

Console.WriteLine($"runs: {runs} in {clock.Elapsed.TotalSeconds:0.00} s, {runs / clock.Elapsed.TotalSeconds:0} runs per second (run, write watch read, reset, watch restarted)");
Console.WriteLine($"time per run: guest {Micros(guestTicks):0} us (input written, program run, its copy-on-write faults), " +
    $"reset {Micros(resetTicks):0} us, write watch {Micros(watchTicks):0} us (read and restarted)");
Console.WriteLine($"pages dirtied per run (write watch): avg {(double)dirtyTotal / runs:0.00}, min {dirtyMin}, max {dirtyMax}; " +
    $"pages compared per reset: avg {(double)comparedTotal / runs:0.00}, max {comparedMax}");
Console.WriteLine($"crashes found: {crashes} (wild store {wildStores}, write to code {codeWrites}, other {otherEnds}); clean halts {halted}");
foreach (string line in shown) Console.WriteLine(line);
Check(unpredicted == 0, $"every run ended as the program's bugs predict ({runs} of {runs})", $"{unpredicted} runs ended otherwise than predicted");
Check(dirtyMismatches == 0, "the write watch listed exactly the pages each run wrote", $"{dirtyMismatches} runs' written pages differ from the prediction");
Check(resetMismatches == 0, "each reset compared exactly the pages its run wrote", $"{resetMismatches} resets compared another count than the pages written");
Check(dirtyMin >= 2 && dirtyMax <= 2 + GuestLayout.HeapPages, $"dirty pages within [2, {2 + GuestLayout.HeapPages}] (input and stack, and the heap pages touched)",
    $"dirty pages out of range: min {dirtyMin}, max {dirtyMax}");

// The snapshot state is intact: the space after its last reset, and a fresh instance, read back
// exactly what was snapshotted; nothing is left written; the host mirrors the page table.
Check(ReadAll(space, GuestLayout.Heap, GuestLayout.HeapPages * Page).AsSpan().SequenceEqual(heapBefore),
    $"after {runs} runs the heap reads back its snapshot contents ({GuestLayout.HeapPages} pages: tags, counters zero)", "the heap differs from its snapshot");
Check(ReadAll(space, GuestLayout.Code, (ulong)code.Length).AsSpan().SequenceEqual(code), "the byte code is intact", "the byte code changed");
Check(ReadAll(space, GuestLayout.Input, Page).All(b => b == 0), "the input page is back to zeros", "the input page kept a run's input");
Check(space.WrittenPages(guest).Count == 0, "nothing is listed as written after the last reset", "pages are listed as written after the last reset");
using (AddressSpace fresh = snapshot.Instantiate())
{
    fresh.Space.Activate();
    bool same = ReadAll(fresh, GuestLayout.Heap, GuestLayout.HeapPages * Page).AsSpan().SequenceEqual(heapBefore);
    space.Space.Activate();
    Check(same && fresh.Areas.SequenceEqual(space.Areas), "a fresh instance of the snapshot agrees (heap and areas)", "a fresh instance differs");
}
IReadOnlyList<MirrorDifference> diffs = space.Space.CheckHostMirror();
Check(diffs.Count == 0, "the host mirrors the page table", $"the host differs: {string.Join("; ", diffs)}");
space.Dispose();
snapshot.Dispose();
Check(pool.FramesInUse == 0 && pool.ReservedChunks == 0, "space and snapshot disposed: every frame back in the pool",
    $"{pool.FramesInUse} frames, {pool.ReservedChunks} chunks still in use after disposal");

Console.WriteLine(failures == 0 ? "snapshot fuzz: all checks passed" : $"snapshot fuzz: {failures} check(s) FAILED");
return failures == 0 ? 0 : 1;

void Check(bool ok, string passed, string failed)
{
    Console.WriteLine(ok ? $"  ok: {passed}" : $"  FAILED: {failed}");
    if (!ok) failures++;
}

// How a run ended, in the words of the bugs planted in the program.
static string Classify(RunResult r) => r switch
{
    { Outcome: RunOutcome.Halted } => "halt",
    { Outcome: RunOutcome.Fault, Fault: { Access: PageFaultAccess.Write, Kind: PageFaultKind.NotPresent } f }
        when f.Address >= GuestLayout.Heap + GuestLayout.HeapPages * Page && f.Address < GuestLayout.Stack => "wild store",
    { Outcome: RunOutcome.Fault, Fault: { Access: PageFaultAccess.Write, Kind: PageFaultKind.Protection } f }
        when f.Address == GuestLayout.Code => "write to code",
    _ => "other",
};

// The program's behaviour on an input, computed without running it: how it ends, where it
// faults, and which pages it writes (the input page, the stack's top page, the heap pages it counts in).
static (RunOutcome End, ulong Fault, SortedSet<ulong> Pages) Predict(byte[] input, int length)
{
    var pages = new SortedSet<ulong> { GuestLayout.Input, GuestLayout.StackTop - Page };
    for (int i = 0; i < length; i++) pages.Add(GuestLayout.Heap + (ulong)(input[i] & 15) * Page);
    if ((input[0] & 31) == 31)
    {
        ulong target = GuestLayout.Heap + ((ulong)input[1] << 12);
        if (input[1] >= GuestLayout.HeapPages) return (RunOutcome.Fault, target, pages);
        pages.Add(target);
    }
    if ((input[2] & 63) == 63) return (RunOutcome.Fault, GuestLayout.Code, pages);
    return (RunOutcome.Halted, 0, pages);
}

static byte[] ReadAll(AddressSpace s, ulong va, ulong len)
{
    var bytes = new byte[len];
    VmReader<Fallible> reader = s.Space.Reader(va, len);
    CopyResult r = reader.ReadFallible(bytes);
    if (!r.IsOk) throw new InvalidOperationException($"reading 0x{va:x} failed: {r.Error} {r.Fault}");
    return bytes;
}

static int ResidentPages(AddressSpace s) =>
    s.QueryRange(new VaddrRange(0, s.Space.Size)).Count(q => { using (q.Item) return q.Item is MappedRam; });

double Micros(long ticks) => ticks * 1e6 / Stopwatch.Frequency / runs;

static string Hex(IEnumerable<ulong> pages) => string.Join(" ", pages.Select(p => $"0x{p:x}"));
