// Copy-on-write fork, shown page by page. A parent writes into a lazily allocated area, forks,
// then parent and child each write different pages. We print which pages the two spaces still
// share, which faults did the work, how many frames and host mappings it cost, the child as
// UVm's own dump describes it; then we prove that each space sees exactly what it wrote.
using System.Text;
using UVm;
using UVm.Areas;
using UVm.Diagnostics;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

const ulong MiB = 1UL << 20, Page = Paging.PageSize;
const int Pages = 64;
using var pool = new FramePool(64 * MiB);
var parent = new AddressSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = pool });
ulong area = parent.Map(Pages * Page, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Flags = PageFlags.RW, Align = 2 * MiB });
var expected = new Dictionary<AddressSpace, byte[]> { [parent] = new byte[Pages * Page] }; // what each space must read
int failures = 0;

Console.WriteLine($"UVm copy-on-write fork demo: a lazy area of {Pages} pages at guest 0x{area:x}, no frames yet.");
Console.WriteLine($"Faults resolve a window of {parent.FaultAroundPages} pages at once (fault-around): a first touch maps the window's");
Console.WriteLine("missing pages zeroed; a write to a shared page copies the window's shared pages (fewer faults, and runs of");
Console.WriteLine("frames long enough that the host's mappings stay few).\n");

Write(parent, "parent before fork", 0, 1, 2, 3, 17, 20, 33, 40);
long beforeFork = pool.FramesInUse;
AddressSpace child = parent.Fork();
expected[child] = (byte[])expected[parent].Clone();
long afterFork = pool.FramesInUse;
Write(parent, "parent after fork", 3, 56);
Write(child, "child after fork", 5, 20);
long afterWrites = pool.FramesInUse;

Console.WriteLine("\n== Page map (one character per page)");
Console.WriteLine("   S = shared: the same frame as the other space, read-only until someone writes it");
Console.WriteLine("   P = private: a frame of its own (a write made its whole window private, in both spaces)");
Console.WriteLine("   . = not present: never touched, no frame yet (untouched pages next to a touched one came with its fault-around window)");
Console.WriteLine($"          {string.Concat(Enumerable.Range(0, Pages).Select(i => i % 10 == 0 ? (char)('0' + i / 10) : ' '))}");
Console.WriteLine($"          {string.Concat(Enumerable.Range(0, Pages).Select(i => (char)('0' + i % 10)))}");
Dictionary<int, (ulong Paddr, int Refs)> parentMap = Frames(parent), childMap = Frames(child);
Console.WriteLine($"  parent  {Grid(parentMap, childMap)}");
Console.WriteLine($"  child   {Grid(childMap, parentMap)}");

Console.WriteLine("\n== Faults by kind (each space counts its own; VmSpaceDump.Statistics)");
Console.WriteLine("   demand-zero: a first touch got zeroed frames; copy-on-write: a write to a shared page copied its window,");
Console.WriteLine("   or gave write access back where nobody else holds the frames any more (a takeover: no copy)");
foreach ((string name, AddressSpace s) in new[] { ("parent", parent), ("child", child) })
{
    VmSpaceStatistics st = VmSpaceDump.Statistics(s.Space);
    AreaStats a = s.Stats;
    Console.WriteLine($"  {name,-7} {st.Faults}");
    Console.WriteLine($"  {"",-7} pages: {a.DemandZeroPages} zero-filled, {a.CopyOnWritePages} copied, {a.CopyOnWriteTakeoverPages} taken over; " +
        $"resident {st.ResidentPages} ({st.PrivatePages} private, {st.SharedPages} shared)");
}

Console.WriteLine("\n== Host mappings (the kernel's VMAs in each arena, as /proc/self/maps shows them)");
Console.WriteLine("   neighbouring pages with neighbouring frames and equal rights merge into one; the unused rest of the arena counts too");
foreach ((string name, AddressSpace s) in new[] { ("parent", parent), ("child", child) })
{
    IReadOnlyList<MirrorDifference> diffs = s.Space.CheckHostMirror();
    Console.WriteLine($"  {name,-7} {s.Space.CountHostMappings()} mappings; {(diffs.Count == 0 ? "host matches page table" : "HOST DIFFERS:\n    " + string.Join("\n    ", diffs))}");
    if (diffs.Count > 0) failures++;
}

Console.WriteLine("\n== The child, as UVm's maps-style dump shows it (VmSpaceDump.Describe)");
foreach (string line in VmSpaceDump.Describe(child).TrimEnd().Split('\n')) Console.WriteLine($"  {line}");

Console.WriteLine("\n== Contents (every page of both spaces read back through fault-handling readers)");
foreach ((string name, AddressSpace s) in new[] { ("parent", parent), ("child", child) })
{
    s.Space.Activate();
    for (int page = 0; page < Pages; page++)
    {
        var actual = new byte[Page];
        VmReader<Fallible> reader = s.Space.Reader(area + (ulong)page * Page, Page);
        CopyResult r = reader.ReadFallible(actual);
        if (r.IsOk && actual.AsSpan().SequenceEqual(expected[s].AsSpan(page * (int)Page, (int)Page))) continue;
        Console.WriteLine($"  MISMATCH in the {name} at page {page}: read \"{Text(actual)}\" ({r.Error?.ToString() ?? "no fault"}), expected \"{Text(expected[s].AsSpan(page * (int)Page, (int)Page))}\"");
        failures++;
    }
}
if (failures == 0)
    Console.WriteLine($"  verified: each space reads exactly its own writes in all {Pages} pages, zeros elsewhere (page 3: \"{Text(Read(parent, 3))}\" vs \"{Text(Read(child, 3))}\")");

Console.WriteLine("\n== Frames in use (4 KiB frames of the pool; the fork copies nothing, each page copied on write costs one frame)");
parent.Dispose();
child.Dispose();
Console.WriteLine($"  before fork {beforeFork}, after fork {afterFork} (nothing copied), after the writes {afterWrites}, after both disposed {pool.FramesInUse} (reserved 2 MiB chunks {pool.ReservedChunks})");
if (pool.FramesInUse != 0 || pool.ReservedChunks != 0) failures++;

Console.WriteLine(failures == 0 ? "\nAll checks passed." : $"\n{failures} check(s) FAILED.");
return failures == 0 ? 0 : 1;

// Writes "<who> wrote page N" (64 bytes with its zero padding) at the start of each page through a fallible writer (faults resolved on the way).
void Write(AddressSpace s, string who, params int[] pages)
{
    s.Space.Activate();
    foreach (int page in pages)
    {
        var text = new byte[64]; // the message, then zeros: a later write replaces it whole
        Encoding.ASCII.GetBytes($"{who} wrote page {page}", text);
        VmWriter<Fallible> writer = s.Space.Writer(area + (ulong)page * Page, (ulong)text.Length);
        CopyResult r = writer.WriteFallible(text);
        if (!r.IsOk) throw new InvalidOperationException($"{who}: write to page {page} failed: {r.Error} {r.Fault}");
        text.CopyTo(expected[s], page * (int)Page);
    }
    Console.WriteLine($"{who}: wrote pages {string.Join(", ", pages)}");
}

// Each present page's frame and its reference count (without the query's own handle).
Dictionary<int, (ulong Paddr, int Refs)> Frames(AddressSpace s)
{
    var map = new Dictionary<int, (ulong, int)>();
    foreach ((VaddrRange range, VmQueriedItem? item) in s.QueryRange(VaddrRange.FromLength(area, Pages * Page)))
    {
        if (item is MappedRam ram) map[(int)((range.Start - area) / Page)] = (ram.Frame.Paddr, ram.Frame.ReferenceCount - 1);
        item?.Dispose();
    }
    return map;
}

string Grid(Dictionary<int, (ulong Paddr, int Refs)> mine, Dictionary<int, (ulong Paddr, int Refs)> other) =>
    string.Concat(Enumerable.Range(0, Pages).Select(p =>
        !mine.TryGetValue(p, out var m) ? '.'
        : other.TryGetValue(p, out var o) && o.Paddr == m.Paddr && m.Refs > 1 ? 'S' : 'P'));

byte[] Read(AddressSpace s, int page)
{
    s.Space.Activate();
    var bytes = new byte[64];
    VmReader<Fallible> reader = s.Space.Reader(area + (ulong)page * Page, (ulong)bytes.Length);
    reader.ReadFallible(bytes);
    return bytes;
}

static string Text(ReadOnlySpan<byte> bytes)
{
    int end = bytes.IndexOf((byte)0);
    return Encoding.ASCII.GetString(end < 0 ? bytes[..Math.Min(40, bytes.Length)] : bytes[..end]);
}
