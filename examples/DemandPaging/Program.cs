// Demand paging with a page-fault handler of your own. A guest sees an 8-page "document" at a
// fixed address, but no page of it exists until the guest touches it: the first access faults,
// UVm calls our handler in ordinary managed code, the handler makes the page (a frame filled with
// the page's text, mapped read-only), and the access is retried from the exact byte where it
// stopped. Touches outside the document, and writes into it, are refused and reported exactly.
using System.Text;
using UVm;
using UVm.Diagnostics;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

const ulong MiB = 1UL << 20, Page = Paging.PageSize;
const ulong DocVa = 0x40_0000;            // where the document lives in the guest
const int DocPages = 8;
int failures = 0;

using var pool = new FramePool(16 * MiB);
using var space = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = pool });
var served = new List<int>();             // document pages the handler made, in order

space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo fault) =>
{
    ulong page = fault.Address & ~(Page - 1);
    string what = $"  fault: {fault.Access.ToString().ToLowerInvariant()} at 0x{fault.Address:x} ({fault.Kind})";
    if (page < DocVa || page >= DocVa + DocPages * Page || fault.Access != PageFaultAccess.Read)
    {
        Console.WriteLine($"{what} -> refused: {(fault.Access != PageFaultAccess.Read ? "the document is read-only" : "not part of the document")}");
        return false;
    }
    int index = (int)((page - DocVa) / Page);
    using UFrame frame = s.Pool.AllocFrame();                        // zeroed
    var writer = frame.Writer();
    writer.Write(Encoding.ASCII.GetBytes($"This is page {index} of the document, made when first read.\0"));
    using (CursorMut cursor = s.CursorMut(VaddrRange.FromLength(page, Page)))
        cursor.Map(frame, PageProperty.New(PageFlags.R));            // the mapping keeps its own reference
    served.Add(index);
    Console.WriteLine($"{what} -> served page {index} with frame 0x{frame.Paddr:x}");
    return true;                                                     // retry the access
});

space.Activate();
Console.WriteLine($"UVm demand paging: a {DocPages}-page read-only document at guest 0x{DocVa:x}, no page present yet.\n");

Console.WriteLine("1. The guest reads the text of page 0 and page 5.");
foreach (int p in new[] { 0, 5 })
{
    var reader = space.Reader(DocVa + (ulong)p * Page, Page);
    var buffer = new byte[128];
    IoResult<int> length = reader.ReadCString(buffer);
    Console.WriteLine($"  read: \"{Encoding.ASCII.GetString(buffer, 0, length.Unwrap())}\"");
}

Console.WriteLine("\n2. One copy across pages 2 and 3: two faults, both served, and the copy completes.");
{
    var reader = space.Reader(DocVa + 2 * Page + Page / 2, Page);
    var buffer = new byte[Page];
    CopyResult r = reader.ReadFallible(buffer);
    Console.WriteLine($"  copied {r.Bytes} of {Page} bytes, {(r.IsOk ? "no unresolved fault" : $"stopped: {r.Fault}")}");
    Check(r.IsOk && r.Bytes == Page, "the copy across two served pages completes");
}

Console.WriteLine("\n3. Page 0 again: it is present now, so no fault.");
{
    int before = served.Count;
    var reader = space.Reader(DocVa, 8);
    ulong first8 = reader.ReadVal<ulong>().Unwrap();
    Console.WriteLine($"  read 8 bytes: 0x{first8:x16} (\"{Encoding.ASCII.GetString(BitConverter.GetBytes(first8))}\"), handler calls: {served.Count - before}");
    Check(served.Count == before, "a present page does not fault");
}

Console.WriteLine("\n4. A copy that runs off the end of the document stops at its last byte.");
{
    ulong start = DocVa + DocPages * Page - 100;
    var reader = space.Reader(start, 300);
    CopyResult r = reader.ReadFallible(new byte[300]);
    Console.WriteLine($"  copied {r.Bytes} of 300 bytes; unresolved fault at 0x{r.Fault?.Address:x} ({r.Fault?.Access}, {r.Fault?.Kind})");
    Check(r.Bytes == 100 && r.Fault?.Address == DocVa + DocPages * Page && r.Fault?.Kind == PageFaultKind.NotPresent,
        "exactly the 100 document bytes, then a not-present fault at the document's end");
}

Console.WriteLine("\n5. A write into the document: the page is mapped read-only, the handler refuses.");
{
    var writer = space.Writer(DocVa + 16, 4);
    IoResult<uint> r = writer.WriteVal(0xdeadbeefu);
    Console.WriteLine($"  write {(r.IsOk ? "succeeded" : $"failed: {r.Error} at 0x{r.Fault?.Address:x} ({r.Fault?.Access}, {r.Fault?.Kind})")}");
    Check(!r.IsOk && r.Fault?.Kind == PageFaultKind.Protection && r.Fault?.Access == PageFaultAccess.Write, "a write to a read-only page is a protection fault");
}

Console.WriteLine("\n== The space now (VmSpaceDump.Describe)");
Console.Write(VmSpaceDump.Describe(space));
PageFaultCounts faults = PageFaultCounts.Of(space);
Check(served.SequenceEqual(new[] { 0, 5, 2, 3, 7 }), $"pages served in the order touched (got {string.Join(", ", served)})");
Check(faults.UserHandler == 5 && faults.Unresolved == 2, $"5 faults served by the handler, 2 refused (got {faults})");

Console.WriteLine(failures == 0 ? "\ndemand paging: all checks passed" : $"\ndemand paging: {failures} checks FAILED");
return failures == 0 ? 0 : 1;

void Check(bool ok, string what)
{
    if (ok) return;
    failures++;
    Console.WriteLine($"  CHECK FAILED: {what}");
}
