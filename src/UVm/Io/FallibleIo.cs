using System.Runtime.CompilerServices;
using UVm.Diagnostics;
using UVm.Faults;

namespace UVm.Io;

/// <summary>
/// The operations of fallible readers and writers: copies to and from guest memory done by
/// UVm's fault-recovering primitives. A fault is resolved by the space (in ordinary managed
/// context) and the operation continues from the exact byte where it stopped; an unresolved
/// fault ends it with <see cref="UVmError.PageFault"/> and the exact count of bytes done.
/// Nothing here allocates.
/// </summary>
/// <remarks>
/// A resolution that claims success but leaves the access failing is retried at most
/// <see cref="MaxRetriesPerAddress"/> times at the same address, then reported as a fault.
/// </remarks>
public static unsafe class FallibleIo
{
    /// <summary>Consecutive resolutions tried for one faulting address before giving up.</summary>
    public const int MaxRetriesPerAddress = 4;

    /// <summary>The guest address of the reader's next byte.</summary>
    public static ulong GuestAddress(this ref VmReader<Fallible> reader) => (ulong)(reader.Cursor - reader._resolver!.HostBase);

    /// <summary>The guest address of the writer's next byte.</summary>
    public static ulong GuestAddress(this ref VmWriter<Fallible> writer) => (ulong)(writer.Cursor - writer._resolver!.HostBase);

    /// <summary>
    /// Copies <c>min(Remain, writer.Avail)</c> bytes of guest memory into <paramref name="writer"/>;
    /// both cursors advance by exactly the bytes copied.
    /// </summary>
    public static CopyResult ReadFallible(this ref VmReader<Fallible> reader, ref VmWriter<Infallible> writer)
    {
        ulong want = Math.Min(reader.Remain, writer.Avail);
        CopyResult r = CopyLoop(reader._resolver, writer._cursor, reader._cursor, want);
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
        fixed (byte* dst = destination) r = CopyLoop(reader._resolver, dst, reader._cursor, want);
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
        CopyResult r = CopyLoop(writer._resolver, writer._cursor, reader._cursor, want);
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
        fixed (byte* src = source) r = CopyLoop(writer._resolver, writer._cursor, src, want);
        writer.Advance(r.Bytes);
        return r;
    }

    /// <summary>Zeroes <c>min(len, Avail)</c> bytes of guest memory; the cursor advances by the bytes zeroed.</summary>
    public static CopyResult FillZeros(this ref VmWriter<Fallible> writer, ulong len)
    {
        ulong want = Math.Min(len, writer.Avail);
        ulong done = 0;
        var retry = new RetryState();
        while (done < want)
        {
            NativeFault f;
            ulong left = NativeFaults.FillZero(writer._cursor + done, want - done, &f);
            done = want - left;
            if (left == 0) break;
            if (!retry.Resolve(writer._resolver, f, done, out PageFaultInfo info))
            {
                FallibleByteCounter.Add(done);
                writer.Advance(done);
                return new CopyResult(done, UVmError.PageFault, info);
            }
        }
        FallibleByteCounter.Add(done);
        writer.Advance(done);
        return new CopyResult(done, null, null);
    }

    /// <summary>
    /// Reads one <typeparamref name="T"/> (1, 2, 4 or 8 bytes with a single access; other sizes
    /// by copy). On failure the cursor does not move.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than <c>sizeof(T)</c> bytes remain.</exception>
    public static IoResult<T> ReadVal<T>(this ref VmReader<Fallible> reader) where T : unmanaged
    {
        if (reader.Remain < (ulong)sizeof(T)) ThrowHelper.OutOfRange($"only {reader.Remain} bytes remain", nameof(T));
        T value;
        NativeFault f;
        var retry = new RetryState();
        while (NativeFaults.Load(reader._cursor, &value, &f) != 0)
        {
            if (!retry.Resolve(reader._resolver, f, 0, out PageFaultInfo info)) return new IoResult<T>(default, UVmError.PageFault, info);
        }
        reader.Advance((ulong)sizeof(T));
        return new IoResult<T>(value, null, null);
    }

    /// <summary>
    /// Writes one <typeparamref name="T"/> (1, 2, 4 or 8 bytes with a single access; other sizes
    /// by copy). On failure the cursor does not move.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Less than <c>sizeof(T)</c> bytes of room remain.</exception>
    public static IoResult<T> WriteVal<T>(this ref VmWriter<Fallible> writer, T value) where T : unmanaged
    {
        if (writer.Avail < (ulong)sizeof(T)) ThrowHelper.OutOfRange($"only {writer.Avail} bytes of room remain", nameof(T));
        NativeFault f;
        var retry = new RetryState();
        while (NativeFaults.Store(writer._cursor, value, &f) != 0)
        {
            if (!retry.Resolve(writer._resolver, f, 0, out PageFaultInfo info)) return new IoResult<T>(default, UVmError.PageFault, info);
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
        NativeFault f;
        var retry = new RetryState();
        // An aligned load of 4 or 8 bytes is a single atomic access on x86-64.
        while (NativeFaults.Load(reader._cursor, &value, &f) != 0)
        {
            if (!retry.Resolve(reader._resolver, f, 0, out PageFaultInfo info)) return new IoResult<T>(default, UVmError.PageFault, info);
        }
        return new IoResult<T>(value, null, null);
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
        NativeFault f;
        var retry = new RetryState();
        while (NativeFaults.Cas32(writer._cursor, expected, desired, &observed, &f) != 0)
        {
            if (!retry.Resolve(writer._resolver, f, 0, out PageFaultInfo info)) return new IoResult<uint>(0, UVmError.PageFault, info);
        }
        return new IoResult<uint>(observed, null, null);
    }

    /// <summary>The 64-bit form of <see cref="AtomicCompareExchange(ref VmWriter{Fallible}, uint, uint)"/>.</summary>
    /// <exception cref="ArgumentException">The cursor is not 8-byte aligned, or fewer than 8 bytes of room remain.</exception>
    public static IoResult<ulong> AtomicCompareExchange(this ref VmWriter<Fallible> writer, ulong expected, ulong desired)
    {
        CheckAtomic(writer.Cursor, writer.Avail, sizeof(ulong));
        ulong observed;
        NativeFault f;
        var retry = new RetryState();
        while (NativeFaults.Cas64(writer._cursor, expected, desired, &observed, &f) != 0)
        {
            if (!retry.Resolve(writer._resolver, f, 0, out PageFaultInfo info)) return new IoResult<ulong>(0, UVmError.PageFault, info);
        }
        return new IoResult<ulong>(observed, null, null);
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
        fixed (byte* dst = buffer)
        {
            while (done < limit)
            {
                // Copy up to the next page boundary at a time so a string near a hole is read exactly.
                ulong toBoundary = Paging.PageSize - ((ulong)(reader._cursor + done) & (Paging.PageSize - 1));
                ulong chunk = Math.Min(toBoundary, limit - done);
                CopyResult r = CopyLoop(reader._resolver, dst + done, reader._cursor + done, chunk);
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

    /// <summary>Copies with fault resolution; returns the exact prefix length copied.</summary>
    private static CopyResult CopyLoop(IFaultResolver? resolver, byte* dst, byte* src, ulong want)
    {
        ulong done = 0;
        var retry = new RetryState();
        while (done < want)
        {
            NativeFault f;
            ulong left = NativeFaults.Copy(dst + done, src + done, want - done, &f);
            done = want - left;
            if (left == 0) break;
            if (!retry.Resolve(resolver, f, done, out PageFaultInfo info))
            {
                FallibleByteCounter.Add(done);
                return new CopyResult(done, UVmError.PageFault, info);
            }
        }
        FallibleByteCounter.Add(done); // per thread: no shared cache line on the copy path
        return new CopyResult(done, null, null);
    }

    /// <summary>Bounds how often one address is "resolved" without the access then succeeding.</summary>
    private struct RetryState
    {
        private ulong _addr;
        private ulong _progress;
        private int _count;
        private PageFaultInfo _last; // what the resolver said about the previous fault

        [MethodImpl(MethodImplOptions.NoInlining)]
        internal bool Resolve(IFaultResolver? resolver, in NativeFault fault, ulong progress, out PageFaultInfo info)
        {
            if (_count > 0 && fault.Addr == _addr && progress == _progress)
            {
                if (_count >= MaxRetriesPerAddress)
                {
                    // The same fault again after "resolved": report it as the resolver last
                    // classified it (not a guess), and let it count the fault as unresolved.
                    info = _last;
                    resolver?.GiveUp(info);
                    return false;
                }
            }
            else
            {
                _count = 0;
            }
            _addr = fault.Addr;
            _progress = progress;
            _count++;
            if (resolver is null)
            {
                info = Describe(null, fault);
                return false;
            }
            bool resolved = resolver.Resolve(fault, out info);
            _last = info;
            return resolved;
        }

        private static PageFaultInfo Describe(IFaultResolver? resolver, in NativeFault fault)
        {
            ulong va = resolver is null ? fault.Addr : fault.Addr - (ulong)resolver.HostBase;
            return new PageFaultInfo(va, (PageFaultAccess)fault.Access, fault.Signo == NativeFaults.SIGBUS ? PageFaultKind.BusError : PageFaultKind.Protection, fault.Signo);
        }
    }
}
