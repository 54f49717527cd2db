using NUnit.Framework;
using UVm.Faults;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Faults;

/// <summary>
/// The registered page-fault handler: called in ordinary context for faults the page table does
/// not already allow; "resolved" retries the access from the faulting byte, "not resolved" ends
/// the copy with the exact count; a handler that lies cannot make a copy spin.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class PageFaultHandlers : GuestFixture
{
    [Test]
    public void A_resolving_handler_lets_a_read_finish()
    {
        var pager = new DemandPager();
        Assert.That(Space.RegisterPageFaultHandler(pager.Handle), Is.True);
        ulong from = Va + 100;
        int length = (int)(3 * Page - 200);
        byte[] dst = new byte[length];

        var reader = Space.Reader(from, (ulong)length);
        CopyResult r = reader.ReadFallible(dst);

        Assert.That(r, Is.EqualTo(new CopyResult((ulong)length, null, null)));
        Assert.That(dst, Is.EqualTo(PatternOf(from, length)));
        Assert.That(pager.Seen, Is.EqualTo(new[]
        {
            new PageFaultInfo(from, PageFaultAccess.Read, PageFaultKind.NotPresent, 11),
            new PageFaultInfo(Va + Page, PageFaultAccess.Read, PageFaultKind.NotPresent, 11),
            new PageFaultInfo(Va + 2 * Page, PageFaultAccess.Read, PageFaultKind.NotPresent, 11),
        }));
        Assert.That(Space.HandledFaults, Is.EqualTo(3));
        Assert.That(Space.UnresolvedFaults, Is.Zero);
        Assert.That(Space.SpuriousFaults, Is.Zero);
    }

    [Test]
    public void A_resolving_handler_lets_a_write_finish_over_what_it_mapped()
    {
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler(pager.Handle);
        byte[] src = Filled(200, 0x42);

        var writer = Space.Writer(Va + Page - 100, 200);
        Assert.That(writer.WriteFallible(src).IsOk, Is.True);

        byte[] back = new byte[2 * Page];
        var reader = Space.Reader(Va, 2 * Page);
        Assert.That(reader.ReadFallible(back).IsOk, Is.True);
        Assert.That(back[..(int)(Page - 100)], Is.EqualTo(PatternOf(Va, (int)(Page - 100))), "the handler's contents");
        Assert.That(back[(int)(Page - 100)..(int)(Page + 100)], Is.All.EqualTo((byte)0x42), "then the write");
        Assert.That(back[(int)(Page + 100)..], Is.EqualTo(PatternOf(Va + Page + 100, (int)(Page - 100))));
        Assert.That(pager.Seen.Select(f => f.Access), Is.All.EqualTo(PageFaultAccess.Write));
        Assert.That(Space.HandledFaults, Is.EqualTo(2));
    }

    [Test]
    public void A_handler_can_widen_rights_on_a_protection_fault()
    {
        var frame = MapFilled(Va, 0x11, PageFlags.R);
        var seen = new List<PageFaultInfo>();
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            seen.Add(info);
            using var cursor = s.CursorMut(VaddrRange.FromLength(info.Address & ~(Page - 1), Page));
            return cursor.ProtectNext(Page, (ref PageFlags f, ref CachePolicy _) => f |= PageFlags.W) is not null;
        });

        var writer = Space.Writer(Va + 8, 8);
        Assert.That(writer.WriteVal(0xAAAAAAAAAAAAAAAAUL).IsOk, Is.True);

        Assert.That(seen, Is.EqualTo(new[] { new PageFaultInfo(Va + 8, PageFaultAccess.Write, PageFaultKind.Protection, 11) }));
        Assert.That(ContentsOf(frame)[8..16], Is.All.EqualTo((byte)0xAA));
        Assert.That(Space.HandledFaults, Is.EqualTo(1));
    }

    [Test]
    public void A_refusing_handler_gives_the_exact_partial_count()
    {
        MapPatterned(Va);
        int calls = 0;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            calls++;
            return false;
        });
        byte[] dst = Filled(300, 0xEE);

        var reader = Space.Reader(Va + Page - 123, 300);
        CopyResult r = reader.ReadFallible(dst);

        Assert.That(r.Bytes, Is.EqualTo(123UL));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Read, PageFaultKind.NotPresent, 11)));
        Assert.That(dst[..123], Is.EqualTo(PatternOf(Va + Page - 123, 123)));
        Assert.That(dst[123..], Is.All.EqualTo((byte)0xEE));
        Assert.That(calls, Is.EqualTo(1));
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(1));
        Assert.That(Space.HandledFaults, Is.Zero);
    }

    [Test]
    public void A_handler_that_resolves_some_pages_gives_the_count_up_to_the_first_it_refuses()
    {
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) => info.Address < Va + 2 * Page && pager.Handle(s, info));

        var reader = Space.Reader(Va + 10, 3 * Page);
        byte[] dst = new byte[3 * Page];
        CopyResult r = reader.ReadFallible(dst);

        Assert.That(r.Bytes, Is.EqualTo(2 * Page - 10));
        Assert.That(r.Fault?.Address, Is.EqualTo(Va + 2 * Page));
        Assert.That(dst[..(int)(2 * Page - 10)], Is.EqualTo(PatternOf(Va + 10, (int)(2 * Page - 10))));
        Assert.That(Space.HandledFaults, Is.EqualTo(2));
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(1));
    }

    /// <summary>Calls after which a lying handler owns up, so that a copy that spins on it ends (and fails) instead of hanging.</summary>
    private const int GiveUpAfter = 100_000;

    [Test, CancelAfter(10_000)]
    public void A_handler_that_claims_success_without_fixing_anything_does_not_spin()
    {
        MapPatterned(Va);
        int calls = 0;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            calls++;
            return calls <= GiveUpAfter; // should the copy spin, the handler stops lying and the count fails the test
        });

        var reader = Space.Reader(Va + Page - 5, 100);
        CopyResult r = reader.ReadFallible(new byte[100]);

        Assert.That(r.Bytes, Is.EqualTo(5UL));
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Read, PageFaultKind.NotPresent, 11)),
            "reported as the page table sees it");
        Assert.That(calls, Is.InRange(1, FallibleIo.MaxRetriesWithoutProgress));
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(1), "the fault the copy gave up on is counted as unresolved");
    }

    [Test, CancelAfter(10_000)]
    public void A_lying_handler_cannot_make_single_values_or_atomics_spin()
    {
        MapFilled(Va, 0x11, PageFlags.R);
        int calls = 0;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            calls++;
            return calls <= GiveUpAfter; // should the copy spin, the handler stops lying and the count fails the test
        });

        var writer = Space.Writer(Va, 8);
        Assert.That(writer.WriteVal(1UL).Fault?.Kind, Is.EqualTo(PageFaultKind.Protection));
        Assert.That(writer.AtomicCompareExchange(0u, 1u).Fault?.Kind, Is.EqualTo(PageFaultKind.Protection));
        Assert.That(writer.FillZeros(8).Fault?.Kind, Is.EqualTo(PageFaultKind.Protection));
        var reader = Space.Reader(Va + Page, 8);
        Assert.That(reader.ReadVal<ulong>().Fault?.Kind, Is.EqualTo(PageFaultKind.NotPresent));
        Assert.That(reader.AtomicLoad64().Fault?.Kind, Is.EqualTo(PageFaultKind.NotPresent));
        Assert.That(reader.ReadCString(new byte[8]).Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(calls, Is.LessThanOrEqualTo(6 * FallibleIo.MaxRetriesWithoutProgress));
    }

    [Test]
    public void Only_the_first_registration_takes_effect()
    {
        int first = 0, second = 0;
        Assert.That(Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo i) => { first++; return false; }), Is.True);
        Assert.That(Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo i) => { second++; return false; }), Is.False);

        var reader = Space.Reader(Va, 8);
        reader.ReadVal<ulong>();

        Assert.That(first, Is.EqualTo(1));
        Assert.That(second, Is.Zero);
    }

    [Test]
    public void A_null_handler_is_refused()
    {
        Assert.Throws<ArgumentNullException>(() => Space.RegisterPageFaultHandler(null!));
        var pager = new DemandPager();
        Assert.That(Space.RegisterPageFaultHandler(pager.Handle), Is.True, "a refused null does not count as the registration");
    }

    [Test]
    public void Registering_on_a_disposed_space_is_refused()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 2UL << 20, Pool = Pool });
        space.Dispose();
        Assert.Throws<ObjectDisposedException>(() => space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo i) => false));
        Assert.Throws<ObjectDisposedException>(() => space.HandlePageFault(0, PageFaultAccess.Read));
    }

    [Test]
    public void The_handler_is_given_its_own_space()
    {
        VmSpace? given = null;
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo i) => { given = s; return false; });
        var reader = Space.Reader(Va, 1);
        reader.ReadVal<byte>();
        Assert.That(given, Is.SameAs(Space));
    }

    [Test]
    public void An_exception_from_the_handler_reaches_the_caller_and_leaves_the_space_usable()
    {
        bool fail = true;
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo i) => fail ? throw new InvalidOperationException("handler failed") : pager.Handle(s, i));

        Assert.Throws<InvalidOperationException>(() => { var r = Space.Reader(Va, 8); r.ReadVal<ulong>(); });

        fail = false;
        var reader = Space.Reader(Va, 8);
        Assert.That(reader.ReadVal<ulong>().IsOk, Is.True, "the fault lock was released");
    }

    [Test]
    public void HandlePageFault_resolves_as_a_hardware_fault_would()
    {
        var pager = new DemandPager();
        Assert.That(Space.HandlePageFault(Va, PageFaultAccess.Write), Is.False, "no handler yet");
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(1));

        Space.RegisterPageFaultHandler(pager.Handle);
        Assert.That(Space.HandlePageFault(Va + 5, PageFaultAccess.Write), Is.True);
        Assert.That(pager.Seen.Single(), Is.EqualTo(new PageFaultInfo(Va + 5, PageFaultAccess.Write, PageFaultKind.NotPresent, 11)));
        Assert.That(Space.HandledFaults, Is.EqualTo(1));

        Assert.That(Space.HandlePageFault(Va, PageFaultAccess.Read), Is.True, "now allowed by the page table");
        Assert.That(Space.SpuriousFaults, Is.EqualTo(1));
        Assert.That(pager.Calls, Is.EqualTo(1));

        Assert.That(Space.HandlePageFault(Space.Size, PageFaultAccess.Read), Is.False, "outside user space");
        Assert.That(pager.Calls, Is.EqualTo(1));
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(2));
    }

    public delegate bool FallibleOp(VmSpace space, ulong va);

    private static IEnumerable<TestCaseData> EveryOperation()
    {
        yield return new TestCaseData(new FallibleOp((s, va) => { var r = s.Reader(va, 64); return r.ReadFallible(new byte[64]).IsOk; })).SetArgDisplayNames("ReadFallible");
        yield return new TestCaseData(new FallibleOp((s, va) => { var w = s.Writer(va, 64); return w.WriteFallible(new byte[64]).IsOk; })).SetArgDisplayNames("WriteFallible");
        yield return new TestCaseData(new FallibleOp((s, va) => { var w = s.Writer(va, 64); return w.FillZeros(64).IsOk; })).SetArgDisplayNames("FillZeros");
        yield return new TestCaseData(new FallibleOp((s, va) => { var r = s.Reader(va, 8); return r.ReadVal<ulong>().IsOk; })).SetArgDisplayNames("ReadVal");
        yield return new TestCaseData(new FallibleOp((s, va) => { var w = s.Writer(va, 2); return w.WriteVal((ushort)7).IsOk; })).SetArgDisplayNames("WriteVal");
        yield return new TestCaseData(new FallibleOp((s, va) => { var r = s.Reader(va, 4); return r.AtomicLoad32().IsOk; })).SetArgDisplayNames("AtomicLoad32");
        yield return new TestCaseData(new FallibleOp((s, va) => { var w = s.Writer(va, 8); return w.AtomicCompareExchange(0UL, 1UL).IsOk; })).SetArgDisplayNames("AtomicCompareExchange64");
        yield return new TestCaseData(new FallibleOp((s, va) => { var r = s.Reader(va, 2 * Page); return r.ReadCString(new byte[2 * Page]).IsOk; })).SetArgDisplayNames("ReadCString");
    }

    [TestCaseSource(nameof(EveryOperation))]
    public void Every_fallible_operation_retries_after_the_handler_resolves(FallibleOp op)
    {
        var pager = new DemandPager();
        Space.RegisterPageFaultHandler((VmSpace s, in PageFaultInfo info) =>
        {
            pager.Handle(s, info);
            // Write a NUL at the end of the page so a string read can finish there.
            var w = s.Writer((info.Address & ~(Page - 1)) + Page - 1, 1);
            w.WriteVal((byte)0);
            return true;
        });

        Assert.That(op(Space, Va + 64), Is.True);
        Assert.That(pager.Calls, Is.EqualTo(1));
        Assert.That(Space.HandledFaults, Is.EqualTo(1));
        Assert.That(Space.UnresolvedFaults, Is.Zero);
    }
}
