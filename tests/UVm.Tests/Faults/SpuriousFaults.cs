using NUnit.Framework;
using UVm.Faults;
using UVm.Host;
using UVm.Io;
using UVm.PageTable;
using UVm.Spaces;
using UVm.Interop;

namespace UVm.Tests.Faults;

/// <summary>
/// A fault on a page whose entry already allows the access is spurious (a stale "TLB"): UVm
/// re-installs the host mapping from the page table itself, without calling the handler.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class SpuriousFaults : GuestFixture
{
    private int _handlerCalls;

    [SetUp]
    public void RegisterACountingHandler()
    {
        _handlerCalls = 0;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo i) =>
        {
            _handlerCalls++;
            return false;
        });
    }

    /// <summary>
    /// Changes the entry at <paramref name="va"/> and nothing else: the public <c>ProtectNext</c>
    /// always dispatches when its cursor is disposed, so this uses the page-table cursor beneath it.
    /// </summary>
    private void ChangeEntryOnly(ulong va, Func<PageFlags, PageFlags> change)
    {
        var pt = new PtCursor(Space.Table, va, va + Page, mutable: true);
        try
        {
            Assert.That(pt.ProtectNext(Page, p => p with { Flags = change(p.Flags) }), Is.Not.Null);
        }
        finally
        {
            pt.Release();
        }
    }

    [Test]
    public void Widened_rights_not_yet_dispatched_are_filled_without_the_handler()
    {
        var frame = MapFilled(Va, 0x11, PageFlags.R);
        ChangeEntryOnly(Va, f => f | PageFlags.W);
        Assert.That(Space.CheckHostMirror(), Is.Not.Empty, "the host still maps the page read-only");

        var writer = Space.Writer(Va + 100, 8);
        IoResult<ulong> r = writer.WriteVal(0x2222222222222222UL);

        Assert.That(r.IsOk, Is.True);
        Assert.That(ContentsOf(frame)[100..108], Is.All.EqualTo((byte)0x22));
        Assert.That(Space.SpuriousFaults, Is.EqualTo(1));
        Assert.That(_handlerCalls, Is.Zero);
        Assert.That(Space.HandledFaults + Space.UnresolvedFaults, Is.Zero);
        Assert.That(Space.CheckHostMirror(), Is.Empty, "the fill brought the host in line with the table");
    }

    [Test]
    public void Widened_rights_dispatched_by_the_cursor_need_no_fault()
    {
        MapFilled(Va, 0x11, PageFlags.R);
        using (var cursor = Space.CursorMut(VaddrRange.FromLength(Va, Page)))
            cursor.ProtectNext(Page, (ref PageFlags f, ref CachePolicy _) => f |= PageFlags.W);

        var writer = Space.Writer(Va, 8);
        Assert.That(writer.WriteVal(1UL).IsOk, Is.True);
        Assert.That(Space.SpuriousFaults, Is.Zero);
    }

    [Test]
    public void A_host_mapping_lost_behind_UVms_back_is_restored_with_its_contents()
    {
        MapPatterned(Va);
        MapPatterned(Va + Page);
        nint host = Space.HostBase + (nint)(Va + Page);
        Assert.That(Libc.Mmap(host, (nuint)Page, Libc.PROT_NONE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0), Is.EqualTo(host));

        byte[] dst = new byte[2 * Page];
        var reader = Space.Reader(Va, 2 * Page);
        Assert.That(reader.ReadFallible(dst).IsOk, Is.True);

        Assert.That(dst, Is.EqualTo(PatternOf(Va, (int)(2 * Page))), "the frame kept its contents");
        Assert.That(Space.SpuriousFaults, Is.EqualTo(1));
        Assert.That(_handlerCalls, Is.Zero);
    }

    [Test]
    public void A_fault_the_entry_does_not_allow_still_goes_to_the_handler()
    {
        MapFilled(Va, 0x11, PageFlags.R);
        Libc.Mprotect(Space.HostBase + (nint)Va, (nuint)Page, Libc.PROT_NONE);

        var writer = Space.Writer(Va, 8);
        IoResult<ulong> r = writer.WriteVal(1UL);

        Assert.That(r.Fault?.Kind, Is.EqualTo(PageFaultKind.Protection));
        Assert.That(_handlerCalls, Is.EqualTo(1));
        Assert.That(Space.SpuriousFaults, Is.Zero);

        var reader = Space.Reader(Va, 8);
        Assert.That(reader.ReadVal<ulong>().Value, Is.EqualTo(0x1111111111111111UL), "a read the entry allows is spurious");
        Assert.That(Space.SpuriousFaults, Is.EqualTo(1));
    }

    [Test]
    public void Narrowed_rights_bind_only_once_dispatched()
    {
        var frame = MapFilled(Va, 0x11);
        ChangeEntryOnly(Va, f => f & ~PageFlags.W);

        var stale = Space.Writer(Va, 1);
        Assert.That(stale.WriteVal((byte)0x33).IsOk, Is.True, "until the flush the host may grant the old rights");
        Assert.That(ContentsOf(frame)[0], Is.EqualTo((byte)0x33));

        using (var cursor = Space.CursorMut(VaddrRange.FromLength(Va, Page)))
            cursor.ProtectNext(Page, (ref PageFlags f, ref CachePolicy _) => f &= ~PageFlags.W);
        var fresh = Space.Writer(Va, 1);
        Assert.That(fresh.WriteVal((byte)0x44).Fault?.Kind, Is.EqualTo(PageFaultKind.Protection));
        Assert.That(ContentsOf(frame)[0], Is.EqualTo((byte)0x33));
    }

    [Test]
    public void A_lost_host_mapping_of_IO_memory_is_restored_at_the_right_file_offset()
    {
        const ulong huge = Paging.HugePageSize, at = 0x1000_0000, fileOffset = 2 * Page;
        int fd = Libc.MemfdCreate("uvm-test-spurious-io", Libc.MFD_CLOEXEC);
        try
        {
            Assert.That(Libc.Ftruncate(fd, (long)(fileOffset + 2 * huge)), Is.Zero);
            using var io = IoMem.FromFile(fd, fileOffset, 2 * huge);
            using (var cursor = Space.CursorMut(VaddrRange.FromLength(at, 2 * huge)))
                cursor.MapIoMem(io, PageProperty.New(PageFlags.RW), 2 * huge, 0);
            var writer = Space.Writer(at, 2 * huge);
            Assert.That(writer.WriteFallible(PatternOf(at, (int)(2 * huge))).IsOk);

            // Drop the host mapping of one page inside the second 2 MiB entry.
            ulong lost = at + huge + 5 * Page;
            nint host = Space.HostBase + (nint)lost;
            Libc.Mmap(host, (nuint)Page, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0);

            byte[] dst = new byte[3 * Page];
            var reader = Space.Reader(lost - Page, 3 * Page);
            Assert.That(reader.ReadFallible(dst).IsOk, Is.True);
            Assert.That(dst, Is.EqualTo(PatternOf(lost - Page, (int)(3 * Page))), "the page came back from its own place in the file");
            Assert.That(Space.SpuriousFaults, Is.EqualTo(1));
            Assert.That(_handlerCalls, Is.Zero);
        }
        finally
        {
            Libc.Close(fd);
        }
    }
}
