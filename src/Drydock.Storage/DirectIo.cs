using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Drydock.Storage;

/// <summary>
/// What writing local files with Linux <c>O_DIRECT</c> (past the page cache) needs, shared by the file-system blob
/// store and local restores: the flag for this architecture and buffers aligned the way direct IO wants them.
/// </summary>
public static class DirectIo
{
    /// <summary>The alignment direct writes keep to here: buffer address, file offset and length.</summary>
    public const int Alignment = 4096;

    /// <summary>O_DIRECT, which differs between architectures; 0 where Drydock does not know it (no direct IO there).</summary>
    public static int OpenFlag => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 0x4000,
        Architecture.Arm64 => 0x10000,
        _ => 0,
    };

    /// <summary>The index of the first aligned byte of a pinned array (it never moves, so the answer stays true).</summary>
    /// <param name="pinned">An array allocated pinned.</param>
    /// <returns>0 to <see cref="Alignment"/> - 1.</returns>
    public static unsafe int AlignedOffset(byte[] pinned)
    {
        ArgumentNullException.ThrowIfNull(pinned);
        var address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
        return (int)((Alignment - (address & (Alignment - 1))) & (Alignment - 1));
    }

    /// <summary>A buffer for direct writes: the aligned window of a slightly larger pinned array.</summary>
    /// <param name="length">The bytes needed.</param>
    /// <returns>The aligned buffer.</returns>
    public static Memory<byte> AllocateAligned(int length)
    {
        var array = GC.AllocateUninitializedArray<byte>(length + Alignment, pinned: true);
        return array.AsMemory(AlignedOffset(array), length);
    }
}
