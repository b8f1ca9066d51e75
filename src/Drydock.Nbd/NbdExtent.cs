using Drydock.Nbd.Protocol;

namespace Drydock.Nbd;

/// <summary>A range of the export with the status flags one metadata context reports for it.</summary>
/// <param name="Offset">Absolute start offset in bytes.</param>
/// <param name="Length">Length in bytes.</param>
/// <param name="Flags">Status flags; their meaning depends on the context.</param>
public readonly record struct NbdExtent(ulong Offset, ulong Length, uint Flags)
{
    /// <summary>The first byte after the extent.</summary>
    public ulong End => Offset + Length;

    /// <summary>For <c>base:allocation</c>: the range is a hole.</summary>
    public bool IsHole => (Flags & (uint)NbdAllocationFlags.Hole) != 0;

    /// <summary>For <c>base:allocation</c>: the range reads as zeroes.</summary>
    public bool IsZero => (Flags & (uint)NbdAllocationFlags.Zero) != 0;

    /// <summary>For <c>qemu:dirty-bitmap:*</c>: the range changed since the bitmap was created.</summary>
    public bool IsDirty => (Flags & NbdContexts.DirtyFlag) != 0;
}
