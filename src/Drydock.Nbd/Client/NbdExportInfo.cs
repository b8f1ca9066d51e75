using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Client;

/// <summary>What negotiation established about an export.</summary>
public sealed record NbdExportInfo
{
    /// <summary>The export name the client asked for.</summary>
    public required string Name { get; init; }

    /// <summary>The server's description, when it sent one.</summary>
    public string? Description { get; init; }

    /// <summary>Size in bytes.</summary>
    public required ulong Size { get; init; }

    /// <summary>Transmission flags.</summary>
    public required NbdTransmissionFlags Flags { get; init; }

    /// <summary>Block-size constraints (the defaults when the server stated none).</summary>
    public required NbdBlockSizes BlockSizes { get; init; }

    /// <summary>Whether structured replies were negotiated.</summary>
    public required bool StructuredReplies { get; init; }

    /// <summary>Whether the connection is encrypted with TLS.</summary>
    public required bool Tls { get; init; }

    /// <summary>The metadata contexts negotiated, by name (ids are per connection and stay inside the client).</summary>
    public required IReadOnlyList<string> MetaContexts { get; init; }

    /// <summary>Number of connections in use.</summary>
    public int Connections { get; init; } = 1;

    /// <summary>Whether the export is read-only.</summary>
    public bool IsReadOnly => (Flags & NbdTransmissionFlags.ReadOnly) != 0;

    /// <summary>Whether the server allows several connections to share the export.</summary>
    public bool CanMultiConn => (Flags & NbdTransmissionFlags.CanMultiConn) != 0;

    /// <summary>Largest payload of one READ or WRITE request.</summary>
    public uint MaxPayload => Math.Min(BlockSizes.Maximum, NbdSizes.DefaultMaxPayload);

    /// <summary>Whether a flag is set.</summary>
    /// <param name="flag">The flag.</param>
    /// <returns>True when the server advertised it.</returns>
    public bool Has(NbdTransmissionFlags flag) => (Flags & flag) == flag;
}

/// <summary>What a server says about an export without entering transmission (NBD_OPT_INFO, LIST_META_CONTEXT).</summary>
public sealed record NbdExportDescription
{
    /// <summary>The negotiated export, as <see cref="NbdClient"/> would see it (no contexts selected).</summary>
    public required NbdExportInfo Export { get; init; }

    /// <summary>Every metadata context the server offers for the export (empty without structured replies).</summary>
    public required IReadOnlyList<string> AvailableContexts { get; init; }

    /// <summary>Exports the server lists (NBD_OPT_LIST), when it allows listing; otherwise empty.</summary>
    public required IReadOnlyList<string> Exports { get; init; }

    /// <summary>The handshake flags the server offered.</summary>
    public required NbdHandshakeFlags HandshakeFlags { get; init; }
}
