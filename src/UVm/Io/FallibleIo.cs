using System.Runtime.CompilerServices;
using UVm.Faults;
using UVm.Interop;

namespace UVm.Io;

/// <summary>
/// The operations of fallible readers and writers: copies to and from guest memory done by
/// UVm's fault-recovering primitives. A fault is resolved by the space (in ordinary managed
/// context) and the operation continues from the exact byte where it stopped; an unresolved
/// fault ends it with <see cref="UVmError.PageFault"/> and the exact count of bytes done.
/// Nothing here allocates.
/// </summary>
/// <remarks>
/// A resolution that claims success but leaves the access failing is believed at most
/// <see cref="MaxRetriesWithoutProgress"/> times in a row for one access (wherever it faults:
/// a handler that maps one page by unmapping another cannot make an access spin), then the
/// access is reported as a fault. Every byte a copy moves starts the count again.
/// </remarks>
[SkipLocalsInit] // the hot paths' NativeFault and value locals are written before they are read
public static unsafe class FallibleIo
{
    /// <summary>Resolutions believed for one access in a row without it moving a byte further, before it fails as a fault.</summary>
    public const int MaxRetriesWithoutProgress = 4;

    /// <summary>The guest address of the reader's next byte.</summary>
    public static ulong GuestAddress(this ref VmReader<Fallible> reader) => (ulong)(reader.Cursor - reader._guest.Resolver.HostBase);

    /// <summary>The guest address of the writer's next byte.</summary>
    public static ulong GuestAddress(this ref VmWriter<Fallible> writer) => (ulong)(writer.Cursor - writer._guest.Resolver.HostBase);

    /// <summary>
    /// Copies <c>min(Remain, writer.Avail)</c> bytes of guest memory into <paramref name="writer"/>;
    /// both cursors advance by exactly the bytes copied.
    /// </summary>
    public static CopyResult ReadFallible(this ref VmReader<Fallible> reader, ref VmWriter<Infallible> writer)
    {
        ulong want = Math.Min(reader.Remain, writer.Avail);
        CopyResult r = CopyLoop(reader._guest, writer._cursor, reader._cursor, want, PageFaultAccess.Read);
        reader.Advance(r.Bytes);
        writer.Advance(r.Bytes);
        return r;
    }

    /// <summary>Copies <c>min(Remain, destination.Length)</c> bytes of guest memory into <paramref name="destination"/>.</summary>
    public static CopyResult ReadFallible(this ref VmReader<Fallible> reader, Span<byte> destination)
    {
        ulong want = Math.Min(reader.Remain, (ulong)destination.Length);
        CopyResult r;
        // SAFETY: the span is pinned for the copy; its first `want` bytes are writable.
        fixed (byte* dst = destination) r = CopyLoop(reader._guest, dst, reader._cursor, want, PageFaultAccess.Read);
        reader.Advance(r.Bytes);
        return r;
    }

    /// <summary>
    /// Copies <c>min(reader.Remain, Avail)</c> bytes from <paramref name="reader"/> into guest
    /// memory; both cursors advance by exactly the bytes copied.
    /// </summary>
    public static CopyResult WriteFallible(this ref VmWriter<Fallible> writer, ref VmReader<Infallible> reader)
    {
        ulong want = Math.Min(reader.Remain, writer.Avail);
        CopyResult r = CopyLoop(writer._guest, writer._cursor, reader._cursor, want, PageFaultAccess.Write);
        reader.Advance(r.Bytes);
        writer.Advance(r.Bytes);
        return r;
    }

    /// <summary>Copies <c>min(source.Length, Avail)</c> bytes of <paramref name="source"/> into guest memory.</summary>
    public static CopyResult WriteFallible(this ref VmWriter<Fallible> writer, ReadOnlySpan<byte> source)
    {
        ulong want = Math.Min(writer.Avail, (ulong)source.Length);
        CopyResult r;
        // SAFETY: the span is pinned for the copy; its first `want` bytes are readable.
        fixed (byte* src = source) r = CopyLoop(writer._guest, writer._cursor, src, want, PageFaultAccess.Write);
        writer.Advance(r.Bytes);
        return r;
    }

    /// <summary>Zeroes <c>min(len, Avail)</c> bytes of guest memory; the cursor advances by the bytes zeroed.</summary>
    public static CopyResult FillZeros(this ref VmWriter<Fallible> writer, ulong len)
    {
        ulong want = Math.Min(len, writer.Avail);
        GuestAccess guest = writer._guest;
        long outer = guest.Thread.Enter(guest.Gate.Id);
        try
        {
            if (guest.Gate.IsClosed) return guest.Closed(writer._cursor, PageFaultAccess.Write);
            ulong done = 0;
            var retry = new RetryState();
            while (done < want)
            {
                NativeFault f;
                // SAFETY: [cursor + done, cursor + want) lies inside the writer's checked range;
                // the primitive recovers from any fault there.
                ulong left = NativeFaults.FillZero(writer._cursor + done, want - done, &f);
                done = want - left;
                if (left == 0) break;
                if (!retry.Resolve(guest.Resolver, f, done, out PageFaultInfo info))
                {
                    guest.Thread.CountBytes(done);
                    writer.Advance(done);
                    return new CopyResult(done, UVmError.PageFault, info);
                }
            }
            guest.Thread.CountBytes(done);
            writer.Advance(done);
            return new CopyResult(done, null, null);
        }
        finally
        {
            guest.Thread.Leave(outer);
        }
    }

    /// <summary>
    /// Reads one <typeparamref name="T"/> (1, 2, 4 or 8 bytes with a single access; other sizes
    /// by copy). On failure the cursor does not move.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than <c>sizeof(T)</c> bytes remain.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static IoResult<T> ReadVal<T>(this ref VmReader<Fallible> reader) where T : unmanaged
    {
        if (reader.Remain < (ulong)sizeof(T)) ThrowHelper.OutOfRange($"only {reader.Remain} bytes remain", nameof(T));
        GuestAccess guest = reader._guest;
        T value;
        NativeFault f;
        // A load enters the gate like every access: even a load can have effects on whatever the
        // host put at a disposed space's addresses (a file or userfaultfd mapping fills a page).
        long outer = guest.Thread.Enter(guest.Gate.Id);
        // SAFETY: the gate is open, so the sizeof(T) guest bytes at the cursor (inside the reader's
        // checked range) are in the arena until we leave it; the primitive recovers from any fault
        // there; value and f are locals it writes.
        if (guest.Gate.IsClosed || NativeFaults.Load(reader._cursor, &value, &f) != 0)
        {
            var op = new LoadOp<T>(reader._cursor, &value);
            if (!AccessAfterFault(ref op, guest, outer, &f, out PageFaultInfo info)) return new IoResult<T>(default, UVmError.PageFault, info);
        }
        else
        {
            guest.Thread.Leave(outer);
        }
        reader.Advance((ulong)sizeof(T));
        return new IoResult<T>(value, null, null);
    }

    /// <summary>
    /// Writes one <typeparamref name="T"/> (1, 2, 4 or 8 bytes with a single access; other sizes
    /// by copy). On failure the cursor does not move.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Less than <c>sizeof(T)</c> bytes of room remain.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static IoResult<T> WriteVal<T>(this ref VmWriter<Fallible> writer, T value) where T : unmanaged
    {
        if (writer.Avail < (ulong)sizeof(T)) ThrowHelper.OutOfRange($"only {writer.Avail} bytes of room remain", nameof(T));
        GuestAccess guest = writer._guest;
        NativeFault f;
        long outer = guest.Thread.Enter(guest.Gate.Id);
        // SAFETY: as in ReadVal, for the sizeof(T) guest bytes at the writer's cursor.
        if (guest.Gate.IsClosed || NativeFaults.Store(writer._cursor, value, &f) != 0)
        {
            var op = new StoreOp<T>(writer._cursor, value);
            if (!AccessAfterFault(ref op, guest, outer, &f, out PageFaultInfo info)) return new IoResult<T>(default, UVmError.PageFault, info);
        }
        else
        {
            guest.Thread.Leave(outer);
        }
        writer.Advance((ulong)sizeof(T));
        return new IoResult<T>(value, null, null);
    }

    /// <summary>Atomically loads the naturally aligned 32-bit value at the cursor; the cursor does not move.</summary>
    /// <exception cref="ArgumentException">The cursor is not 4-byte aligned, or fewer than 4 bytes remain.</exception>
    public static IoResult<uint> AtomicLoad32(this ref VmReader<Fallible> reader) => reader.AtomicLoad<uint>();

    /// <summary>Atomically loads the naturally aligned 64-bit value at the cursor; the cursor does not move.</summary>
    /// <exception cref="ArgumentException">The cursor is not 8-byte aligned, or fewer than 8 bytes remain.</exception>
    public static IoResult<ulong> AtomicLoad64(this ref VmReader<Fallible> reader) => reader.AtomicLoad<ulong>();

    private static IoResult<T> AtomicLoad<T>(this ref VmReader<Fallible> reader) where T : unmanaged
    {
        CheckAtomic(reader.Cursor, reader.Remain, sizeof(T));
        T value;
        // An aligned load of 4 or 8 bytes is a single atomic access on x86-64.
        // SAFETY: as in ReadVal; CheckAtomic proved the access aligned and inside the range.
        var op = new LoadOp<T>(reader._cursor, &value);
        return Access(ref op, reader._guest, out PageFaultInfo info) ? new IoResult<T>(value, null, null) : new IoResult<T>(default, UVmError.PageFault, info);
    }

    /// <summary>
    /// Atomically replaces the aligned 32-bit value at the cursor with <paramref name="desired"/>
    /// if it equals <paramref name="expected"/>. Returns the value seen before (equal to
    /// <paramref name="expected"/> exactly when the swap happened). The cursor does not move.
    /// The access counts as a write even when the values differ.
    /// </summary>
    /// <exception cref="ArgumentException">The cursor is not 4-byte aligned, or fewer than 4 bytes of room remain.</exception>
    public static IoResult<uint> AtomicCompareExchange(this ref VmWriter<Fallible> writer, uint expected, uint desired)
    {
        CheckAtomic(writer.Cursor, writer.Avail, sizeof(uint));
        uint observed;
        // SAFETY: as in ReadVal; CheckAtomic proved the access aligned and inside the range.
        var op = new Cas32Op(writer._cursor, expected, desired, &observed);
        return Access(ref op, writer._guest, out PageFaultInfo info) ? new IoResult<uint>(observed, null, null) : new IoResult<uint>(0, UVmError.PageFault, info);
    }

    /// <summary>The 64-bit form of <see cref="AtomicCompareExchange(ref VmWriter{Fallible}, uint, uint)"/>.</summary>
    /// <exception cref="ArgumentException">The cursor is not 8-byte aligned, or fewer than 8 bytes of room remain.</exception>
    public static IoResult<ulong> AtomicCompareExchange(this ref VmWriter<Fallible> writer, ulong expected, ulong desired)
    {
        CheckAtomic(writer.Cursor, writer.Avail, sizeof(ulong));
        ulong observed;
        // SAFETY: as in ReadVal; CheckAtomic proved the access aligned and inside the range.
        var op = new Cas64Op(writer._cursor, expected, desired, &observed);
        return Access(ref op, writer._guest, out PageFaultInfo info) ? new IoResult<ulong>(observed, null, null) : new IoResult<ulong>(0, UVmError.PageFault, info);
    }

    /// <summary>
    /// Reads a NUL-terminated string of at most <c>buffer.Length - 1</c> bytes into
    /// <paramref name="buffer"/> (NUL included) and returns its length without the NUL; the
    /// cursor moves past the NUL. Fails with <see cref="UVmError.InvalidArgs"/> (cursor unmoved)
    /// when no NUL is found within the buffer or the reader's range, and with
    /// <see cref="UVmError.PageFault"/> (cursor unmoved) on an unresolved fault.
    /// </summary>
    public static IoResult<int> ReadCString(this ref VmReader<Fallible> reader, Span<byte> buffer)
    {
        ulong limit = Math.Min((ulong)buffer.Length, reader.Remain);
        ulong done = 0;
        // SAFETY: the buffer is pinned while its first `limit` bytes are written; every guest
        // byte read lies inside the reader's range and is read by the fault-recovering copy.
        fixed (byte* dst = buffer)
        {
            while (done < limit)
            {
                // Copy up to the next page boundary at a time so a string near a hole is read exactly.
                ulong toBoundary = Paging.PageSize - ((ulong)(reader._cursor + done) & (Paging.PageSize - 1));
                ulong chunk = Math.Min(toBoundary, limit - done);
                CopyResult r = CopyLoop(reader._guest, dst + done, reader._cursor + done, chunk, PageFaultAccess.Read);
                int nul = new ReadOnlySpan<byte>(dst + done, (int)r.Bytes).IndexOf((byte)0);
                if (nul >= 0)
                {
                    ulong length = done + (ulong)nul;
                    reader.Advance(length + 1);
                    return new IoResult<int>((int)length, null, null);
                }
                done += r.Bytes;
                if (!r.IsOk) return new IoResult<int>(0, UVmError.PageFault, r.Fault);
            }
        }
        return new IoResult<int>(0, UVmError.InvalidArgs, null);
    }

    private static void CheckAtomic(nint cursor, ulong room, int size)
    {
        if (((ulong)cursor & (ulong)(size - 1)) != 0) ThrowHelper.Argument($"an atomic access of {size} bytes needs a {size}-byte aligned address", "cursor");
        if (room < (ulong)size) ThrowHelper.Argument($"an atomic access of {size} bytes needs {size} bytes of room", "cursor");
    }

    /// <summary>
    /// Copies with fault resolution; returns the exact prefix length copied. <paramref name="access"/>
    /// says which side is guest memory: the source of a read, the destination of a write. The
    /// common case (nothing faults) is this inlined path: the gate, one primitive, the count.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static CopyResult CopyLoop(in GuestAccess guest, byte* dst, byte* src, ulong want, PageFaultAccess access)
    {
        ThreadAccess thread = guest.Thread;
        long outer = thread.Enter(guest.Gate.Id);
        NativeFault f;
        ulong left = want;
        // SAFETY: the caller passes `want` bytes of pinned library memory on one side and of its
        // checked guest range on the other; the primitive recovers from any fault in either.
        if (!guest.Gate.IsClosed && (left = NativeFaults.Copy(dst, src, want, &f)) == 0)
        {
            thread.CountBytes(want); // per thread: no shared cache line on the copy path
            thread.Leave(outer);
            return new CopyResult(want, null, null);
        }
        return CopyAfterFault(guest, dst, src, want, access, outer, want - left, &f);
    }

    /// <summary>The rest of <see cref="CopyLoop"/> after its first try faulted (or found the gate closed): resolve, go on from the exact byte.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static CopyResult CopyAfterFault(GuestAccess guest, byte* dst, byte* src, ulong want, PageFaultAccess access, long outer, ulong done, NativeFault* first)
    {
        try
        {
            if (guest.Gate.IsClosed) return guest.Closed(access == PageFaultAccess.Read ? src : dst, access);
            var retry = new RetryState();
            NativeFault f = *first;
            while (true)
            {
                if (!retry.Resolve(guest.Resolver, f, done, out PageFaultInfo info))
                {
                    guest.Thread.CountBytes(done);
                    return new CopyResult(done, UVmError.PageFault, info);
                }
                // SAFETY: as in CopyLoop, for the part not yet copied.
                ulong left = NativeFaults.Copy(dst + done, src + done, want - done, &f);
                done = want - left;
                if (left == 0) break;
            }
            guest.Thread.CountBytes(done);
            return new CopyResult(done, null, null);
        }
        finally
        {
            guest.Thread.Leave(outer);
        }
    }

    // ---- single accesses: one load, store or compare-exchange, retried after a resolved fault ----

    /// <summary>One guest access done by a native primitive: 0 when done, else the fault is in <c>*fault</c>.</summary>
    private interface ISingleAccess
    {
        int Try(NativeFault* fault);
        byte* At { get; }
        PageFaultAccess Kind { get; }
    }

    private readonly struct LoadOp<T>(byte* at, T* value) : ISingleAccess where T : unmanaged
    {
        public byte* At => at;
        public PageFaultAccess Kind => PageFaultAccess.Read;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Try(NativeFault* fault) => NativeFaults.Load(at, value, fault);
    }

    private readonly struct StoreOp<T>(byte* at, T value) : ISingleAccess where T : unmanaged
    {
        public byte* At => at;
        public PageFaultAccess Kind => PageFaultAccess.Write;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Try(NativeFault* fault) => NativeFaults.Store(at, value, fault);
    }

    private readonly struct Cas32Op(byte* at, uint expected, uint desired, uint* observed) : ISingleAccess
    {
        public byte* At => at;
        public PageFaultAccess Kind => PageFaultAccess.Write;
        public int Try(NativeFault* fault) => NativeFaults.Cas32(at, expected, desired, observed, fault);
    }

    private readonly struct Cas64Op(byte* at, ulong expected, ulong desired, ulong* observed) : ISingleAccess
    {
        public byte* At => at;
        public PageFaultAccess Kind => PageFaultAccess.Write;
        public int Try(NativeFault* fault) => NativeFaults.Cas64(at, expected, desired, observed, fault);
    }

    /// <summary>
    /// Does <paramref name="op"/> once, inside the space's gate; the common case (resident, no
    /// fault) is this inlined path: two stores, a load and the primitive, no throw site.
    /// <see cref="ReadVal"/> and <see cref="WriteVal"/> spell the same path out, so that their op
    /// struct is built only after a fault.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Access<TOp>(ref TOp op, GuestAccess guest, out PageFaultInfo info) where TOp : struct, ISingleAccess
    {
        long outer = guest.Thread.Enter(guest.Gate.Id);
        NativeFault f;
        if (!guest.Gate.IsClosed && op.Try(&f) == 0)
        {
            guest.Thread.Leave(outer);
            info = default;
            return true;
        }
        return AccessAfterFault(ref op, guest, outer, &f, out info);
    }

    /// <summary>The rest of <see cref="Access"/> after its first try faulted (or found the gate closed): resolve, retry.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool AccessAfterFault<TOp>(ref TOp op, GuestAccess guest, long outer, NativeFault* first, out PageFaultInfo info)
        where TOp : struct, ISingleAccess
    {
        try
        {
            if (guest.Gate.IsClosed)
            {
                info = guest.Closed(op.At, op.Kind).Fault!.Value;
                return false;
            }
            var retry = new RetryState();
            NativeFault f = *first;
            do
            {
                if (!retry.Resolve(guest.Resolver, f, 0, out info)) return false;
            }
            while (op.Try(&f) != 0);
            info = default;
            return true;
        }
        finally
        {
            guest.Thread.Leave(outer);
        }
    }

    /// <summary>Bounds how often one access is "resolved" without then moving a byte further.</summary>
    private struct RetryState
    {
        private ulong _progress;
        private int _count;
        private PageFaultInfo _last; // what the resolver said about the previous fault

        [MethodImpl(MethodImplOptions.NoInlining)]
        internal bool Resolve(IFaultResolver resolver, in NativeFault fault, ulong progress, out PageFaultInfo info)
        {
            if (_count > 0 && progress == _progress)
            {
                if (_count >= MaxRetriesWithoutProgress)
                {
                    // Faults again and again after "resolved", at whatever addresses: report the
                    // last as the resolver classified it (not a guess), and count it as unresolved.
                    info = _last;
                    resolver.GiveUp(info);
                    return false;
                }
            }
            else
            {
                _count = 0;
            }
            _progress = progress;
            _count++;
            bool resolved = resolver.Resolve(fault, out info);
            _last = info;
            return resolved;
        }
    }
}
