// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControlEnumerable} from "@openzeppelin/contracts/access/extensions/AccessControlEnumerable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";

/// @title Distributor (v2)
/// @notice Holds a property token and pays off-chain payments out in batches, each
///         payment exactly once. Every payment has a dense index, assigned off-chain
///         once and for all; a bit per index (OpenZeppelin `BitMaps`, one storage slot
///         per 256 payments) records that it was paid.
/// @dev Operators (`OPERATOR_ROLE`, several sending keys) distribute; the admin
///      (`DEFAULT_ADMIN_ROLE`, the deployer) grants and revokes operators. The role set is
///      enumerable so that tools can list the operators (rotation revokes all others);
///      that costs gas only on grant and revoke, never in `distributeBatch`.
contract Distributor is AccessControlEnumerable, ReentrancyGuardTransient {
    using BitMaps for BitMaps.BitMap;
    using SafeERC20 for IERC20;

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    /// @dev `packed[i] = uint160(to) << 96 | amount`: one calldata word per payment.
    uint256 private constant AMOUNT_BITS = 96;
    uint256 private constant AMOUNT_MASK = (1 << AMOUNT_BITS) - 1;

    IERC20 public immutable token;

    BitMaps.BitMap private _paid;

    /// @notice Payment `paymentId` (index `index`) was paid by this transaction; its
    ///         recipient and amount are in the token's `Transfer` log emitted right after.
    event Distributed(bytes32 indexed paymentId, uint256 index);
    /// @notice Index `index` was paid before (by an earlier transaction): skipped.
    event AlreadyPaid(bytes32 indexed paymentId, uint256 index);

    error ZeroAddress();
    error EmptyBatch();
    error LengthMismatch(uint256 paymentIds, uint256 packed);
    error IndexOverflow(uint256 firstIndex, uint256 count);
    error ZeroRecipient(uint256 index);
    error ZeroAmount(uint256 index);

    constructor(IERC20 token_, address admin, address[] memory operators) {
        if (address(token_) == address(0) || admin == address(0)) revert ZeroAddress();
        token = token_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        for (uint256 i; i < operators.length; ++i) {
            if (operators[i] == address(0)) revert ZeroAddress();
            _grantRole(OPERATOR_ROLE, operators[i]);
        }
    }

    /// @notice Whether the payment of index `index` was paid.
    function isPaid(uint256 index) external view returns (bool) {
        return _paid.get(index);
    }

    /// @notice Pay payments `firstIndex`, `firstIndex + 1`, ...: payment i goes to
    ///         `address(uint160(packed[i] >> 96))`, `packed[i] & (2**96 - 1)` tokens.
    /// @dev An index already paid is skipped with `AlreadyPaid`, not a revert of the
    ///      batch. A batch can meet a paid index legitimately: its transaction was
    ///      replaced or re-signed while an earlier attempt (another fee, another key)
    ///      still got mined, or it is a replay of a batch that did land. Reverting would
    ///      leave every other payment of that batch unpaid on each resubmission (a batch
    ///      stuck forever until split by hand), and tell the sender nothing it could not
    ///      learn from the log. Skipping pays the others, never pays an index twice (the
    ///      bit is checked before any transfer), and `AlreadyPaid` carries the payment id
    ///      so the sender looks up which transaction did pay it (eth_getLogs by topic).
    ///      Malformed input (a zero recipient or amount) reverts the whole batch: it is
    ///      the sender's bug, the same on every attempt, and must not be half paid.
    ///      A failing transfer (this contract short of tokens) reverts the whole batch,
    ///      bits included: nothing is marked paid that was not.
    ///
    ///      Gas: the bitmap word is read once and written once per 256 consecutive
    ///      indices (kept in a local while the indices share it). That defers the write
    ///      past the token calls, so the batch is `nonReentrant`: the only external call
    ///      goes to the immutable token, and no re-entry may observe the stale word.
    function distributeBatch(uint256 firstIndex, bytes32[] calldata paymentIds, uint256[] calldata packed)
        external
        onlyRole(OPERATOR_ROLE)
        nonReentrant
    {
        uint256 n = paymentIds.length;
        if (n == 0) revert EmptyBatch();
        if (packed.length != n) revert LengthMismatch(n, packed.length);
        if (firstIndex > type(uint256).max - (n - 1)) revert IndexOverflow(firstIndex, n);

        mapping(uint256 bucket => uint256) storage words = _paid._data;
        uint256 bucket = firstIndex >> 8;
        uint256 word = words[bucket];
        IERC20 t = token;
        unchecked {
            for (uint256 i; i < n; ++i) {
                uint256 index = firstIndex + i; // cannot overflow: checked above
                if (index >> 8 != bucket) {
                    words[bucket] = word;
                    bucket = index >> 8;
                    word = words[bucket];
                }
                uint256 p = packed[i];
                address to = address(uint160(p >> AMOUNT_BITS));
                uint256 amount = p & AMOUNT_MASK;
                if (to == address(0)) revert ZeroRecipient(index);
                if (amount == 0) revert ZeroAmount(index);
                uint256 mask = 1 << (index & 0xff);
                if (word & mask != 0) {
                    emit AlreadyPaid(paymentIds[i], index);
                } else {
                    word |= mask;
                    emit Distributed(paymentIds[i], index);
                    t.safeTransfer(to, amount);
                }
            }
        }
        words[bucket] = word;
    }
}
