using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Drydock.Repository.Crypto;

namespace Drydock.Repository.Format;

/// <summary>Signs and verifies JSON documents in a <see cref="SignedEnvelope"/>.</summary>
public static class SignedDocuments
{
    /// <summary>Serialises, signs and wraps a document.</summary>
    /// <typeparam name="T">The document type.</typeparam>
    /// <param name="documentType">The envelope type string (bound into the signature).</param>
    /// <param name="document">The document.</param>
    /// <param name="typeInfo">Its JSON metadata.</param>
    /// <param name="keys">The repository keys.</param>
    /// <returns>The envelope as UTF-8 JSON.</returns>
    public static byte[] Sign<T>(string documentType, T document, JsonTypeInfo<T> typeInfo, RepositoryKeys keys)
    {
        var payload = JsonSerializer.SerializeToUtf8Bytes(document, typeInfo);
        var envelope = new SignedEnvelope
        {
            Format = "drydock-signed",
            Version = 1,
            Type = documentType,
            KeyId = keys.KeyId,
            Algorithm = "HMAC-SHA256",
            Payload = payload,
            Signature = keys.Sign(documentType, payload),
        };
        return JsonSerializer.SerializeToUtf8Bytes(envelope, RepositoryJsonContext.Default.SignedEnvelope);
    }

    /// <summary>Parses an envelope strictly, checks its signature, and parses the payload strictly.</summary>
    /// <typeparam name="T">The document type.</typeparam>
    /// <param name="documentType">The type the caller expects.</param>
    /// <param name="envelopeBytes">The envelope.</param>
    /// <param name="typeInfo">The payload's JSON metadata.</param>
    /// <param name="keys">The repository keys.</param>
    /// <param name="where">Where, for errors.</param>
    /// <returns>The verified document.</returns>
    public static T Verify<T>(string documentType, ReadOnlySpan<byte> envelopeBytes, JsonTypeInfo<T> typeInfo, RepositoryKeys keys, RepositoryLocationInfo where)
        where T : class
    {
        SignedEnvelope? envelope;
        try
        {
            envelope = JsonSerializer.Deserialize(envelopeBytes, RepositoryJsonContext.Default.SignedEnvelope);
        }
        catch (JsonException e)
        {
            throw new ManifestInvalidException("signed envelope is malformed: " + e.Message, where, e);
        }

        if (envelope is null || envelope.Format != "drydock-signed")
        {
            throw new ManifestInvalidException("not a signed document", where);
        }

        if (envelope.Version != 1)
        {
            throw new ManifestInvalidException($"signed envelope version {envelope.Version} is unknown (this Drydock reads version 1)", where);
        }

        if (envelope.Type != documentType)
        {
            throw new ManifestInvalidException($"type confusion: expected a '{documentType}' document, found '{envelope.Type}'", where);
        }

        if (envelope.Signature.Length == 0)
        {
            throw new SignatureException("the document is unsigned and this repository has a key", where);
        }

        if (envelope.Algorithm != "HMAC-SHA256")
        {
            throw new SignatureException($"unsupported signature algorithm '{envelope.Algorithm}'", where);
        }

        if (envelope.KeyId != keys.KeyId || !keys.Verify(documentType, envelope.Payload, envelope.Signature))
        {
            throw new SignatureException(envelope.KeyId != keys.KeyId ? $"signed by unknown key {envelope.KeyId}" : "signature mismatch (edited, or signed with another key)", where);
        }

        try
        {
            return JsonSerializer.Deserialize(envelope.Payload, typeInfo) ?? throw new ManifestInvalidException("payload is null", where);
        }
        catch (JsonException e)
        {
            throw new ManifestInvalidException("payload is malformed: " + e.Message, where, e);
        }
    }
}
