namespace Drydock.Repository.Format;

/// <summary>What an object holds; stored in its header and bound into the AEAD associated data.</summary>
public enum ObjectType : byte
{
    /// <summary>A chunk of disk data.</summary>
    Chunk = 1,

    /// <summary>A per-disk index.</summary>
    Index = 2,

    /// <summary>A signed point manifest.</summary>
    Manifest = 3,

    /// <summary>A signed tombstone of a pruned point.</summary>
    Tombstone = 4,

    /// <summary>A signed verify record.</summary>
    VerifyRecord = 5,

    /// <summary>A signed GC marker.</summary>
    GcMarker = 6,

    /// <summary>The signed repository configuration (never encrypted: it says whether the rest is).</summary>
    Config = 7,
}
