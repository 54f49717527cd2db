using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace UVm.Interop;

/// <summary>What a native primitive reports when its access faulted (<c>struct uvm_fault</c>, 24 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct NativeFault
{
    public ulong Addr;
    public int Signo;
    public int Access;
    public int Code;
    public int Reserved;
}

/// <summary>
/// The bridge to <c>libuvm.so</c> (<c>src/Native</c>): the fault-recovering primitives and the
/// installation of the SIGSEGV/SIGBUS handler. The handler itself never runs managed code;
/// these calls return to managed code with a <see cref="NativeFault"/> describing the fault.
/// </summary>
/// <remarks>
/// The primitives are called without a GC transition: they run for a bounded time, never
/// block, never call back into the runtime, and a fault inside them is turned by the native
/// handler into an ordinary return. That keeps a resident 8-byte read at a few nanoseconds.
/// </remarks>
internal static unsafe partial class NativeFaults
{
    private const string Lib = "libuvm";
    private static int s_installed;

    internal const int SIGBUS = 7, SIGSEGV = 11;
    internal const int AccessRead = 0, AccessWrite = 1, AccessExec = 2;

    /// <summary>Installs the handler once, after the runtime's own (the first space does this).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void EnsureInstalled()
    {
        if (Volatile.Read(ref s_installed) == 0) Install();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Install()
    {
        int rc = uvm_install();
        if (rc != 0) throw new InvalidOperationException($"installing UVm's SIGSEGV/SIGBUS handler failed: errno {-rc}");
        Volatile.Write(ref s_installed, 1);
    }

    internal static ulong ClaimedFaults => uvm_stat_claimed();
    internal static ulong ForwardedSignals => uvm_stat_forwarded();

    [LibraryImport(Lib)] private static partial int uvm_install();
    [LibraryImport(Lib)] private static partial ulong uvm_stat_claimed();
    [LibraryImport(Lib)] private static partial ulong uvm_stat_forwarded();

    [LibraryImport(Lib, EntryPoint = "uvm_copy"), SuppressGCTransition]
    internal static partial ulong Copy(byte* dst, byte* src, ulong len, NativeFault* fault);

    [LibraryImport(Lib, EntryPoint = "uvm_fill_zero"), SuppressGCTransition]
    internal static partial ulong FillZero(byte* dst, ulong len, NativeFault* fault);

    [LibraryImport(Lib, EntryPoint = "uvm_load8"), SuppressGCTransition]
    internal static partial int Load8(byte* src, byte* value, NativeFault* fault);
    [LibraryImport(Lib, EntryPoint = "uvm_load16"), SuppressGCTransition]
    internal static partial int Load16(byte* src, ushort* value, NativeFault* fault);
    [LibraryImport(Lib, EntryPoint = "uvm_load32"), SuppressGCTransition]
    internal static partial int Load32(byte* src, uint* value, NativeFault* fault);
    [LibraryImport(Lib, EntryPoint = "uvm_load64"), SuppressGCTransition]
    internal static partial int Load64(byte* src, ulong* value, NativeFault* fault);

    [LibraryImport(Lib, EntryPoint = "uvm_store8"), SuppressGCTransition]
    internal static partial int Store8(byte* dst, byte value, NativeFault* fault);
    [LibraryImport(Lib, EntryPoint = "uvm_store16"), SuppressGCTransition]
    internal static partial int Store16(byte* dst, ushort value, NativeFault* fault);
    [LibraryImport(Lib, EntryPoint = "uvm_store32"), SuppressGCTransition]
    internal static partial int Store32(byte* dst, uint value, NativeFault* fault);
    [LibraryImport(Lib, EntryPoint = "uvm_store64"), SuppressGCTransition]
    internal static partial int Store64(byte* dst, ulong value, NativeFault* fault);

    [LibraryImport(Lib, EntryPoint = "uvm_cas32"), SuppressGCTransition]
    internal static partial int Cas32(byte* dst, uint expected, uint desired, uint* observed, NativeFault* fault);
    [LibraryImport(Lib, EntryPoint = "uvm_cas64"), SuppressGCTransition]
    internal static partial int Cas64(byte* dst, ulong expected, ulong desired, ulong* observed, NativeFault* fault);

    [LibraryImport(Lib, EntryPoint = "uvm_swap32"), SuppressGCTransition]
    internal static partial int Swap32(byte* dst, uint value, uint* old, NativeFault* fault);
    [LibraryImport(Lib, EntryPoint = "uvm_swap64"), SuppressGCTransition]
    internal static partial int Swap64(byte* dst, ulong value, ulong* old, NativeFault* fault);

    /// <summary>Loads <c>sizeof(T)</c> bytes (1, 2, 4 or 8) with one access; -1 on a fault.</summary>
    /// <remarks>SAFETY: <c>value</c> points to <c>sizeof(T)</c> writable bytes; <c>src</c> is the caller's to check.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Load<T>(byte* src, T* value, NativeFault* fault) where T : unmanaged => sizeof(T) switch
    {
        1 => Load8(src, (byte*)value, fault),
        2 => Load16(src, (ushort*)value, fault),
        4 => Load32(src, (uint*)value, fault),
        8 => Load64(src, (ulong*)value, fault),
        _ => Copy((byte*)value, src, (ulong)sizeof(T), fault) == 0 ? 0 : -1,
    };

    /// <summary>Stores <c>sizeof(T)</c> bytes (1, 2, 4 or 8) with one access; -1 on a fault.</summary>
    /// <remarks>SAFETY: <c>value</c> is a local of exactly <c>sizeof(T)</c> bytes, so reading it as an
    /// integer of that width (or copying it) stays inside it; <c>dst</c> is the caller's to check.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Store<T>(byte* dst, T value, NativeFault* fault) where T : unmanaged => sizeof(T) switch
    {
        1 => Store8(dst, *(byte*)&value, fault),
        2 => Store16(dst, *(ushort*)&value, fault),
        4 => Store32(dst, *(uint*)&value, fault),
        8 => Store64(dst, *(ulong*)&value, fault),
        _ => Copy(dst, (byte*)&value, (ulong)sizeof(T), fault) == 0 ? 0 : -1,
    };
}
